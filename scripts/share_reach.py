"""Can the share-only controller reach the expert schedule? The expert projected onto its action space.

    python scripts/share_reach.py --set eval_episodes=3 eval_task_seeds=[1000,1001,1002,1003,1004,1005] \
        --out docs/share_reach.md

Under ``env.controls: share`` (the default) the policy sets each tool's share per phase; learning
rates and output scales stay at the prior's (``default``: 1 everywhere). The hand-written ``expert``
also scales DPO's output to 0.8 in its last phase, which no share-only action can do. This script
runs ``expert`` and its projection (each phase encoded and decoded by the env's own share-only
space, with the prior's phase as the held one: exactly what the closest share-only action would run)
on the report's (suite, task, episode seed) pairs, batched like the report's fixed schedules, and
writes the gain per suite and family and the paired difference. If the projection scores like the
expert, the policy's gap to it is a learning gap, not one of its action space.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from metactl.commands.train_controller.config import resolve
from metactl.commands.train_controller.run import evaluation_pairs, make_venv
from metactl.envs import PHASE_ENV_ID
from metactl.envs.jobs import Job
from metactl.envs.spaces import PhaseControlSpace
from metactl.envs.vector import run_jobs
from metactl.evaluation import row_gain
from metactl.rundir import atomic_write_text
from metactl.schedule import Schedule
from metactl.tables import render_table

EXPERT, PROJECTED = "expert", "expert, share-only"


def project(schedule: Schedule, prior: Schedule, tools: tuple[str, ...]) -> Schedule:
    """``schedule``'s shares with every learning rate and output scale at ``prior``'s, phase by phase."""
    space = PhaseControlSpace(tools, schedule.layer_groups, shares_only=True)
    phases, start = [], 0.0
    for ph in schedule.phases:
        held = prior.phase_at(start + ph.fraction / 2)
        phases.append(space.phase(space.encode(ph), ph.fraction, held))
        start += ph.fraction
    return Schedule(name=f"{schedule.name}-share-only", layer_groups=schedule.layer_groups, phases=phases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("docs/share_reach.md"))
    args = ap.parse_args()
    cfg, _ = resolve("default", args.overrides, None, None)
    groups = cfg.run.training.layer_groups
    expert = Schedule.named(EXPERT, groups)
    tools = tuple(cfg.run.tools)
    projected = project(expert, Schedule.named(cfg.env.prior, groups), tools)
    pairs = evaluation_pairs(cfg)
    t0 = time.perf_counter()
    venv = make_venv(cfg, PHASE_ENV_ID)
    try:
        jobs = [Job(ts, e, schedule=s, label=label, suite=suite)
                for suite, ts, e in pairs for label, s in ((EXPERT, expert), (PROJECTED, projected))]
        rows = run_jobs(venv, jobs)
    finally:
        venv.close()
    wall = time.perf_counter() - t0

    gain = {(r.get("suite") or cfg.run.suite, r["task_seed"], r["episode_seed"], r["label"]): row_gain(r)
            for r in rows}
    family = {(r.get("suite") or cfg.run.suite, r["task_seed"]): r["family"] for r in rows}
    table = [["suite", "family", "pairs", EXPERT, PROJECTED, "projected - expert (mean, min, max)"]]
    for suite in [cfg.run.suite, *cfg.eval_suites]:
        fams = list(dict.fromkeys(f for (s, _), f in family.items() if s == suite))
        for fam in [*fams, "all"]:
            keys = [(s, ts, e) for (s, ts, e, label) in gain
                    if label == EXPERT and s == suite and (fam == "all" or family[(s, ts)] == fam)]
            diff = [gain[(*k, PROJECTED)] - gain[(*k, EXPERT)] for k in keys]
            table.append([suite, fam, str(len(keys)),
                          f"{statistics.mean(gain[(*k, EXPERT)] for k in keys):+.3f}",
                          f"{statistics.mean(gain[(*k, PROJECTED)] for k in keys):+.3f}",
                          f"{statistics.mean(diff):+.3f} ({min(diff):+.3f}, {max(diff):+.3f})"])
    command = "python scripts/share_reach.py" + (" --set " + " ".join(args.overrides) if args.overrides else "")
    text = (
        "# The expert schedule, projected onto the share-only controller's action space\n\n"
        f"<!-- Written by `{command} --out {args.out}`; do not edit by hand (commentary: docs/controller.md). -->\n\n"
        "Gain over base (final composite minus the base's) per (task, episode seed) pair, averaged; the projection "
        "keeps each phase's shares and puts every learning rate and output scale at the prior's "
        f"(`{cfg.env.prior}`), as the closest share-only action would. Wall time {wall:.0f} s on this machine.\n\n"
        "The projected schedule:\n\n```yaml\n" + projected.to_yaml() + "```\n\n"
        + render_table(table, "markdown") + "\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
