"""Paired comparison of two sets of train-controller runs on the same controller seeds and tasks.

    python scripts/compare_runs.py --a runs --a-label "batched, n_envs 8" \\
        --b runs/subproc64 --b-label "subproc, n_envs 2" --seeds 0 1 2 --out docs/controller_engines.md

Both sets come from ``scripts/controller_report.py`` (``RUNS/tc-s<seed>``, each with ``eval.jsonl``
and ``wall_seconds.txt``). For every (controller seed, held-out task) the learned policy's gain
over base in A and in B and their difference A - B; then the mean ± std of the differences over
seeds (each seed's mean over tasks first) and each set's wall time. Nothing is retrained.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from metactl.evaluation import row_gain
from metactl.rundir import EVAL, atomic_write_text, read_jsonl
from metactl.tables import mean_std, render_table


def gains(run: Path, label: str = "ppo") -> dict[int, float]:
    """Held-out task seed -> ``label``'s composite gain over base in ``run``."""
    return {
        r["task_seed"]: row_gain(r)
        for r in read_jsonl(run / EVAL)
        if r["label"] == label
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True)
    ap.add_argument("--b", type=Path, required=True)
    ap.add_argument("--a-label", default="A")
    ap.add_argument("--b-label", default="B")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    rows = [["controller seed", "task", args.a_label, args.b_label, "A - B"]]
    per_seed, walls = [], []
    for seed in args.seeds:
        ga, gb = gains(args.a / f"tc-s{seed}"), gains(args.b / f"tc-s{seed}")
        tasks = sorted(set(ga) & set(gb))
        for t in tasks:
            rows.append([str(seed), str(t), f"{ga[t]:+.3f}", f"{gb[t]:+.3f}", f"{ga[t] - gb[t]:+.3f}"])
        per_seed.append(
            (statistics.mean(ga[t] for t in tasks), statistics.mean(gb[t] for t in tasks),
             statistics.mean(ga[t] - gb[t] for t in tasks))
        )
        walls.append([str(seed)] + [
            f"{float((d / f'tc-s{seed}' / 'wall_seconds.txt').read_text()):.0f} s" for d in (args.a, args.b)
        ])

    summary = [["", args.a_label, args.b_label, "A - B (paired)"],
               ["ppo gain over base (mean ± std over seeds)",
                *(mean_std([p[i] for p in per_seed], signed=True) for i in range(3))]]
    cmd = (f"python scripts/compare_runs.py --a {args.a} --a-label \"{args.a_label}\" --b {args.b} "
           f"--b-label \"{args.b_label}\" --seeds {' '.join(map(str, args.seeds))} --out {args.out}")
    text = (
        f"# {args.a_label} vs {args.b_label}: the learned policy on the same seeds and tasks\n\n"
        f"<!-- Written by `{cmd}`; do not edit by hand. -->\n\n"
        f"Made by `{cmd}`. A = `{args.a}`, B = `{args.b}`.\n\n"
        + render_table(summary, "markdown") + "\n\nPer controller seed and held-out task:\n\n"
        + render_table(rows, "markdown") + "\n\nWall time per run (training + evaluation, 2 CPU cores):\n\n"
        + render_table([["controller seed", args.a_label, args.b_label], *walls], "markdown") + "\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
