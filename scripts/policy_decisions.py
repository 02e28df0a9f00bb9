"""What a trained closed-loop controller decides, phase by phase, on chosen tasks, and what it scored.

    python scripts/policy_decisions.py runs/share/tc-s0 --suite heldout-families --tasks 1000 1001 1002 \\
        --episodes 3 --train-tasks 8 --out docs/decisions.md

The run dir's policy acts greedily (as in its evaluation) on each (task, episode seed) of ``--suite``
and on the first ``--train-tasks`` training tasks (episode seed 0), through the same jobs and envs
``train-controller`` evaluates with; each row is the realised schedule's tool shares per phase (as
the schedule stores them: a phase's steps go to its tools in proportion to their shares) and the
composite gain over base. ``--compare`` adds the per-episode gains that eval.jsonl files (the run's
own, a report's baselines) hold for the same suite, so a reader sees whether a method's score on a
task is steady over episode seeds or luck. The whole file is written by this script.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from metactl.commands.train_controller.run import _job, make_venv
from metactl.commands.train_controller.search_start import load_run_config
from metactl.envs.vector import run_jobs
from metactl.evaluation import row_gain
from metactl.policies import make_policy
from metactl.policies.config import ControllerConfig
from metactl.rundir import atomic_write_text, read_jsonl

TOOLS = ("sft", "dpo", "retain")


def _shares(schedule) -> str:
    return " | ".join(
        " ".join(f"{p.tools[t].share:.2f}" if t in p.tools else "0.00" for t in TOOLS) for p in schedule.phases
    )


def _rows(run: Path, cfg: ControllerConfig, jobs_spec: list[tuple[str | None, int, int]]) -> list[dict]:
    policy = make_policy(cfg)
    venv = make_venv(cfg, policy.env_id)
    try:
        policy.setup(venv, None)
        policy.load(run, venv)
        actor = policy.actor()
        seed = cfg.run.training.seed
        return run_jobs(venv, [_job(cfg.policy, actor, t, seed + e, suite=s) for s, t, e in jobs_spec])
    finally:
        policy.close()
        venv.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--suite", default="heldout-families")
    ap.add_argument("--tasks", nargs="+", type=int, default=[1000, 1001, 1002])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--train-tasks", type=int, default=8)
    ap.add_argument("--compare", nargs="*", type=Path, default=[],
                    help="eval.jsonl files to list per-episode gains from")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    cfg = load_run_config(args.run)
    lo, hi = cfg.env.train_task_seeds
    spec = [(args.suite, t, e) for t in args.tasks for e in range(args.episodes)]
    spec += [(None, t, 0) for t in range(lo, min(hi, lo + args.train_tasks))]
    rows = _rows(args.run, cfg, spec)
    head = " | ".join(f"phase {i}" for i in range(cfg.env.phases))
    command = (
        f"python scripts/policy_decisions.py {args.run} --suite {args.suite} --tasks {' '.join(map(str, args.tasks))} "
        f"--episodes {args.episodes} --train-tasks {args.train_tasks}"
        + (" --compare " + " ".join(map(str, args.compare)) if args.compare else "") + f" --out {args.out}"
    )
    lines = [
        f"# What the policy of `{args.run}` decides, per phase\n",
        f"<!-- Written by `{command}`; do not edit by hand. -->\n",
        (f"Greedy rollouts; each phase cell is the shares of {', '.join(TOOLS)} in the realised schedule "
         "(a phase's steps go to its tools in proportion to them).\n"),
        f"| suite | family | task | episode seed | gain over base | {head} |",
        "|---|---|---|---|---|" + "---|" * cfg.env.phases,
    ]
    for (suite, _, _), r in zip(spec, rows):
        gain = f"{row_gain(r):+.3f}" if r.get("scores") else "diverged"
        cells = _shares(r["schedule"]) if r.get("schedule") is not None else " | ".join(["-"] * cfg.env.phases)
        lines.append(f"| {suite or cfg.run.suite} | {r['family']} | {r['task_seed']} | {r['episode_seed']} | "
                     f"{gain} | {cells} |")
    if args.compare:
        lines += ["", (f"Per-episode gains over base on `{args.suite}` from the compared eval.jsonl files "
                       "(episode seeds in order), and their mean and spread over the episode seeds of each task:"), "",
                  "| method | family | task | gains | mean | std over episode seeds |", "|---|---|---|---|---|---|"]
        for path in args.compare:
            evald = [r for r in read_jsonl(path) if r.get("suite") == args.suite and r["task_seed"] in args.tasks]
            for label in dict.fromkeys(r["label"] for r in evald):
                for t in args.tasks:
                    mine = sorted((r for r in evald if r["label"] == label and r["task_seed"] == t),
                                  key=lambda r: r["episode_seed"])
                    if not mine:
                        continue
                    g = [row_gain(r) for r in mine]
                    spread = f"{statistics.stdev(g):.3f}" if len(g) > 1 else "-"
                    lines.append(f"| {label} | {mine[0]['family']} | {t} | {', '.join(f'{x:+.3f}' for x in g)} | "
                                 f"{statistics.mean(g):+.3f} | {spread} |")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
