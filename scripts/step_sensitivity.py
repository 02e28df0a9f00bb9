"""How far a schedule's score moves when its shares move by a few percent: the world's step sensitivity.

    python scripts/step_sensitivity.py --runs runs/combo/tc-s0 runs/combo/tc-s3 --schedules expert \
        --suite heldout-families --out docs/step_sensitivity.md

A phase hands its steps to its tools by share (``metactl.episode.plan_phase``, the runner's own), so a
share change of a few percent moves at most about one step per phase from one tool to another, and
leaves the schedule what a person would call the same. This script runs each source schedule (a
run's ``averaged.yaml``, or a named hand schedule) and ``--neighbours`` jittered copies of it (every
non-zero share multiplied by ``exp(u)``, ``u`` uniform in ``[-jitter, jitter]``, drawn from
``--seed``; no tool is switched on or off) on the same (task, episode seed) pairs, and reports per task
family how much the gain over base moves. Where it moves by more than the gaps between methods, those
gaps on that family say more about which side of a step boundary a schedule landed than about the
schedule.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from metactl.commands.train_controller.run import _job, make_venv
from metactl.envs import PHASE_ENV_ID
from metactl.envs.vector import finished, run_jobs
from metactl.episode import order_seed, plan_phase
from metactl.evaluation import row_gain
from metactl.policies.config import load_controller_config
from metactl.rundir import AVERAGED_SCHEDULE, CONFIG
from metactl.schedule import Schedule
from metactl.tables import render_table


def jittered(schedule: Schedule, rng: np.random.Generator, jitter: float) -> Schedule:
    """``schedule`` with every non-zero share scaled by exp(uniform(-jitter, jitter))."""
    out = copy.deepcopy(schedule)
    for phase in out.phases:
        for controls in phase.tools.values():
            if controls.share > 0:
                controls.share = float(controls.share * np.exp(rng.uniform(-jitter, jitter)))
    return out


def step_order(schedule: Schedule, total_steps: int, tools: list[str], seed: int) -> list[str]:
    """The episode's tools step by step, as the runner orders them ('?' where a rule decides while running)."""
    order: list[str] = []
    trained: set[str] = set()
    for i, (phase, steps) in enumerate(zip(schedule.phases, schedule.phase_steps(total_steps))):
        plan = plan_phase(phase, steps, tools, schedule.layer_groups, trained, order_seed(seed, i))
        order += ["+".join(step) or "?" for step in plan.order]
    return order


def moved_steps(a: Schedule, b: Schedule, total_steps: int, tools: list[str], seed: int) -> int:
    """Steps one schedule hands to another tool than the other does, phase by phase (counts, not positions)."""
    moved = 0
    orders = (step_order(a, total_steps, tools, seed), step_order(b, total_steps, tools, seed))
    start = 0
    for steps in a.phase_steps(total_steps):  # a jittered copy keeps its source's phase fractions
        x, y = (Counter(o[start:start + steps]) for o in orders)
        moved += sum((x - y).values())
        start += steps
    return moved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", type=Path, default=[], help="run dirs whose averaged.yaml is a source")
    ap.add_argument("--schedules", nargs="*", default=[], help="named schedules (default, expert, a YAML path)")
    ap.add_argument("--config", type=Path, default=None,
                    help="controller config for the world (default: the first run's config.yaml, else the built-in)")
    ap.add_argument("--suite", default="heldout-families", help="the suite whose tasks run")
    ap.add_argument("--tasks", nargs="+", type=int, default=[1000, 1001, 1002])
    ap.add_argument("--episodes", type=int, default=2, help="episode seeds per task (the config's seed + 0, 1, ...)")
    ap.add_argument("--neighbours", type=int, default=4)
    ap.add_argument("--jitter", type=float, default=0.1, help="largest log-change of a share")
    ap.add_argument("--seed", type=int, default=0, help="draws the jitter")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not args.runs and not args.schedules:
        ap.error("name at least one source: --runs RUN... or --schedules NAME...")

    config = args.config or (args.runs[0] / CONFIG if args.runs else None)
    cfg = load_controller_config(config, ["vec_env=batched", "compare=[]"])
    groups, total = cfg.run.training.layer_groups, cfg.run.training.total_steps
    sources = {f"{r.name} averaged": Schedule.load(r / AVERAGED_SCHEDULE) for r in args.runs}
    sources.update({name: Schedule.named(name, groups) for name in args.schedules})
    rng = np.random.default_rng(args.seed)
    variants = {(src, k): (s if k == 0 else jittered(s, rng, args.jitter))
                for src, s in sources.items() for k in range(args.neighbours + 1)}
    seed0 = cfg.run.training.seed
    pairs = [(ts, seed0 + e) for ts in args.tasks for e in range(args.episodes)]
    jobs = [_job(f"{src}|{k}", s, ts, ep, suite=args.suite) for (src, k), s in variants.items() for ts, ep in pairs]
    venv = make_venv(cfg, PHASE_ENV_ID)
    start = time.time()
    rows = finished(run_jobs(venv, jobs), "the step-sensitivity runs")
    venv.close()
    wall = time.time() - start

    gain: dict[tuple[str, str, int, int, int], float] = {}
    families: dict[tuple[int, int], str] = {}
    for r in rows:
        src, k = r["label"].rsplit("|", 1)
        key = (src, r["family"], r["task_seed"], r["episode_seed"], int(k))
        gain[key] = row_gain(r)
        families[(r["task_seed"], r["episode_seed"])] = r["family"]
    table = [["family", "source", "gain", "neighbours' gain", "std over neighbours", "largest drop",
              "pairs moved > 0.5", "steps moved"]]
    by_family: dict[str, list] = defaultdict(list)
    for fam in sorted(set(families.values())):
        fam_pairs = [p for p in pairs if families.get(p) == fam]
        for src, s in sources.items():
            names = list(s.tool_names)
            own = [gain[(src, fam, ts, ep, 0)] for ts, ep in fam_pairs]
            near = np.array([[gain[(src, fam, ts, ep, k)] for k in range(1, args.neighbours + 1)]
                             for ts, ep in fam_pairs])
            deltas = near - np.array(own)[:, None]
            moved = np.mean([moved_steps(s, variants[(src, k)], total, names, ep)
                             for ts, ep in fam_pairs for k in range(1, args.neighbours + 1)])
            by_family[fam].append(near.std(axis=1).mean())
            table.append([fam, src, f"{np.mean(own):+.3f}", f"{near.mean():+.3f}", f"{near.std(axis=1).mean():.3f}",
                          f"{deltas.min():+.3f}", f"{(np.abs(deltas) > 0.5).mean():.0%}", f"{moved:.1f}"])
    command = (
        "python scripts/step_sensitivity.py"
        + (" --runs " + " ".join(map(str, args.runs)) if args.runs else "")
        + (" --schedules " + " ".join(args.schedules) if args.schedules else "")
        + (f" --config {args.config}" if args.config else "")
        + f" --suite {args.suite} --tasks {' '.join(map(str, args.tasks))} --episodes {args.episodes}"
        + f" --neighbours {args.neighbours} --jitter {args.jitter} --seed {args.seed} --out {args.out}"
    )
    summary = [["family", "mean std over neighbours"]] + [[f, f"{np.mean(v):.3f}"] for f, v in by_family.items()]
    # Each source over every pair of the suite: its own point against the mean of its neighbourhood.
    overall = [["source", "pairs", "gain", "neighbours' gain", "neighbours minus source"]]
    runs_own: list[float] = []
    runs_near: list[float] = []
    for src in sources:
        own = np.array([gain[(src, families[p], *p, 0)] for p in pairs])
        near = np.array([[gain[(src, families[p], *p, k)] for k in range(1, args.neighbours + 1)] for p in pairs])
        overall.append([src, str(len(pairs)), f"{own.mean():+.3f}", f"{near.mean():+.3f}",
                        f"{near.mean() - own.mean():+.3f}"])
        if src.endswith(" averaged"):
            runs_own.append(own.mean())
            runs_near.append(near.mean())
    if len(runs_own) > 1:
        overall.append([f"the {len(runs_own)} runs' averaged schedules, mean", str(len(pairs)),
                        f"{np.mean(runs_own):+.3f}", f"{np.mean(runs_near):+.3f}",
                        f"{np.mean(runs_near) - np.mean(runs_own):+.3f}"])
    args.out.write_text(
        "# Step sensitivity: the score of schedules a few percent apart\n\n"
        f"<!-- Written by `{command}`; do not edit by hand. -->\n\n"
        f"Made by `{command}` in {wall:.0f} s. Each source ran on the same {len(pairs)} (task, episode seed) pairs of "
        f"`{args.suite}` (tasks {args.tasks}, {args.episodes} episode seeds each), and so did {args.neighbours} "
        f"neighbours of it: every non-zero share times exp(u), u uniform in [-{args.jitter}, {args.jitter}] "
        "(no tool switched on or off). Gain = final composite minus the base's. \"std over neighbours\": per "
        "pair, the std of the neighbours' gains, averaged over pairs; \"largest drop\": the lowest neighbour minus "
        "its source on one pair; \"pairs moved > 0.5\": the share of (pair, neighbour) whose gain moved by more "
        "than 0.5 either way; \"steps moved\": of the episode's "
        f"{total} steps, how many a neighbour hands to another tool, phase by phase (mean; where a step sits "
        "within its phase is not counted).\n\n"
        + render_table(table, "markdown") + "\n\nPer family, over sources:\n\n" + render_table(summary, "markdown")
        + f"\n\nEach source over all {len(pairs)} pairs:\n\n" + render_table(overall, "markdown") + "\n"
    )
    print(f"wrote {args.out} ({len(rows)} episodes, {wall:.0f} s)")


if __name__ == "__main__":
    main()
