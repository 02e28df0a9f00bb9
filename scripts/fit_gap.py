"""Does a controller fit the tasks it trained on at the expense of tasks it never saw?

    python scripts/fit_gap.py --runs runs/combo/tc-s0 runs/ep192/tc-s0 --out docs/fit_gap_ep192.md

A controller's return while it trains mixes in its exploration noise, so a rising learning curve
beside a falling held-out score does not yet say that it overfits. This script asks it of one fixed
schedule per run, its ``averaged.yaml`` (the greedy policy's phase controls on the run's first
training tasks, averaged): that schedule runs now on those very training tasks, with the episode
seeds the run's evaluation used (the training episodes drew random 32-bit seeds, so these are new),
and stands beside the same schedule's gain on the held-out task seeds of the run's own suite, read
from the run's ``eval.jsonl`` or, with ``--heldout``, run now on the task seeds given: the evaluation
reads a handful of tasks (1.5 per family at six), and two schedules can trade places on so few.
Runs of the same name under different parents (``A/tc-s0``, ``B/tc-s0``: one controller seed trained
two ways) are also paired: B minus A on both columns.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from metactl.commands.train_controller.run import AVERAGED_TASKS, _job, make_venv
from metactl.commands.train_controller.search_start import load_run_config
from metactl.envs import PHASE_ENV_ID
from metactl.envs.vector import finished, run_jobs
from metactl.evaluation import row_gain
from metactl.policies.config import AVERAGED
from metactl.rundir import AVERAGED_SCHEDULE, EVAL, atomic_write_text, read_jsonl
from metactl.schedule import Schedule
from metactl.tables import render_table


def label(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


def heldout_gains(run: Path, suite: str) -> dict[tuple[int, int], float]:
    """The averaged schedule's gain per (task, episode seed) on ``suite`` in the run's own evaluation."""
    return {(r["task_seed"], r["episode_seed"]): row_gain(r)
            for r in read_jsonl(run / EVAL, appended=True)
            if r["label"] == AVERAGED and r.get("suite") == suite and "scores" in r}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="finished train-controller run dirs")
    ap.add_argument("--tasks", type=int, default=AVERAGED_TASKS,
                    help="how many of the first training tasks run (default: the ones averaged.yaml was made from)")
    ap.add_argument("--episodes", type=int, default=2, help="episode seeds per training task (0, 1, ...)")
    ap.add_argument("--heldout", nargs="+", type=int, default=None, metavar="TASK",
                    help="held-out task seeds to run now, with the same episode seeds (default: read the "
                         "run's own evaluation rows instead); a wider sample than the evaluation's few tasks")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    cfgs = {run: load_run_config(run, overrides=["vec_env=batched", "compare=[]"]) for run in args.runs}
    first = cfgs[args.runs[0]]
    for run, cfg in cfgs.items():
        if cfg.run != first.run:  # one world for every run: otherwise the columns compare different tasks
            raise SystemExit(f"--runs: {run} trained on other run settings than {args.runs[0]} "
                             "(run.*: suite, model or training differ); give runs of one world")
    # Every run's averaged.yaml is made from the first tasks of its own draw: a wider draw (env.train_task_seeds
    # [0, 64] against [0, 16]) starts at the same tasks, so the same training tasks run for every run.
    lo = first.env.train_task_seeds[0]
    hi = min(cfg.env.train_task_seeds[1] for cfg in cfgs.values())
    tasks = list(range(lo, min(hi, lo + args.tasks)))
    for run, cfg in cfgs.items():
        if cfg.env.train_task_seeds[0] != lo:
            raise SystemExit(f"--runs: {run} draws training tasks from {cfg.env.train_task_seeds[0]} "
                             f"(env.train_task_seeds {list(cfg.env.train_task_seeds)}), {args.runs[0]} from {lo}; "
                             "give runs whose draws start at the same task")
    suite = first.run.suite
    for ts in args.heldout or []:
        if any(cfg.env.train_task_seeds[0] <= ts < cfg.env.train_task_seeds[1] for cfg in cfgs.values()):
            raise SystemExit(f"--heldout: task {ts} is a training task of a run (env.train_task_seeds); "
                             "give task seeds outside every run's draw, e.g. 1000 and up")
    # Without --heldout the held-out side is read, not run: a run dir that lacks it is named before any episode runs.
    read_held = {} if args.heldout else {run: list(heldout_gains(run, suite).values()) for run in args.runs}
    for run, held in read_held.items():
        if not held:
            raise SystemExit(f"{run}/eval.jsonl has no averaged rows on {suite}: "
                             "evaluate the run on its own suite first, or pass --heldout TASK...")
    where = [("train", ts) for ts in tasks] + [("held", ts) for ts in args.heldout or []]
    jobs = [_job(f"{side}|{label(run)}", Schedule.load(run / AVERAGED_SCHEDULE), ts, e, suite=suite)
            for run in args.runs for side, ts in where for e in range(args.episodes)]
    venv = make_venv(first, PHASE_ENV_ID)
    start = time.time()
    rows = finished(run_jobs(venv, jobs), "the training-task runs")
    venv.close()
    wall = time.time() - start

    gains: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        side, name = r["label"].split("|", 1)
        gains[(side, name)].append(row_gain(r))
    table = [["run", "training tasks: pairs", "gain", f"held-out tasks of {suite}: pairs", "gain",
              "held-out minus training"]]
    means: dict[str, tuple[float, float]] = {}
    for run in args.runs:
        held = gains[("held", label(run))] if args.heldout else read_held[run]
        t, h = float(np.mean(gains[("train", label(run))])), float(np.mean(held))
        means[label(run)] = (t, h)
        table.append([label(run), str(len(gains[("train", label(run))])), f"{t:+.3f}", str(len(held)), f"{h:+.3f}",
                      f"{h - t:+.3f}"])

    by_name: dict[str, list[Path]] = defaultdict(list)
    for run in args.runs:
        by_name[run.name].append(run)
    paired = [["controller seed", "B", "A", "B minus A, training tasks", "B minus A, held-out tasks"]]
    for name, runs in by_name.items():
        if len(runs) == 2:
            (ta, ha), (tb, hb) = means[label(runs[0])], means[label(runs[1])]
            paired.append([name, runs[1].parent.name, runs[0].parent.name, f"{tb - ta:+.3f}", f"{hb - ha:+.3f}"])

    command = (f"python scripts/fit_gap.py --runs {' '.join(map(str, args.runs))}"
               + (f" --tasks {args.tasks}" if args.tasks != AVERAGED_TASKS else "")
               + (f" --episodes {args.episodes}" if args.episodes != 2 else "")
               + (f" --heldout {' '.join(map(str, args.heldout))}" if args.heldout else "") + f" --out {args.out}")
    lines = [
        "# Each run's averaged schedule on its own training tasks and on held-out tasks", "",
        f"<!-- Written by `{command}`; do not edit by hand. -->", "",
        (f"Made by `{command}`. Training tasks: task seeds {tasks} of `{suite}` (the ones `averaged.yaml` "
         f"is made from), episode seeds {list(range(args.episodes))}, run now ({wall:.0f} s on this machine, "
         "held-out tasks included where run); held-out tasks: "
         + (f"task seeds {args.heldout} with the same episode seeds, run now beside them"
            if args.heldout else "the same schedule's rows in the run's own `eval.jsonl`")
         + ". Gain = final composite minus the base's."), "",
        render_table(table, "markdown"), "",
    ]
    if len(paired) > 1:
        lines += ["The same controller seed trained two ways (B minus A):", "", render_table(paired, "markdown"), ""]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
