"""Where the guarded closed loop fell back to its mean action, and what that did to the gain.

    python scripts/guard_firing.py runs/guard/tc-s0 runs/guard/tc-s3 runs/guard/tc-s4 --out docs/guard_firing.md

Reads each run dir's ``guard.json`` and the ``guarded`` and ``guarded-hold`` rows beside the ``ppo``
rows of its ``eval.jsonl`` (written by ``train-controller`` or ``controller_report.py`` with
``compare`` listing them).
A phase fell back where the action the env received is the guard's fallback for that phase (the
policy's own action never lands on it exactly). Per run, suite and task family: the share of phases
and of episodes that fell back, and the mean gain of ``guarded`` and ``ppo`` on the same (task,
episode seed) pairs. Nothing is run; the whole file is written by this script.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from metactl.evaluation import row_gain
from metactl.policies.config import GUARDED, GUARDED_HOLD
from metactl.policies.guard import ObservationGuard
from metactl.rundir import EVAL, GUARD, atomic_write_text, read_jsonl
from metactl.tables import render_table


def fell_back(row: dict, guard: ObservationGuard) -> list[bool]:
    """Per phase the row acted in: did it take the guard's fallback?"""
    return [bool(np.allclose(a, guard.fallback[p], atol=1e-6)) for p, a in enumerate(row.get("actions") or [])]


def pair(row: dict) -> tuple:
    return row.get("suite"), row["task_seed"], row.get("episode_seed", 0)


def summarise(run: Path, label: str) -> list[list[str]]:
    guard = ObservationGuard.load(run / GUARD)
    rows = read_jsonl(run / EVAL)
    ppo = {pair(r): r for r in rows if r["label"] == "ppo"}
    groups: dict[tuple[str, str], list[tuple[list[bool], float, float]]] = defaultdict(list)
    for r in rows:
        if r["label"] != label or pair(r) not in ppo:
            continue
        groups[(r["suite"], r["family"])].append((fell_back(r, guard), row_gain(r), row_gain(ppo[pair(r)])))
    out = []
    for (suite, family), items in sorted(groups.items()):
        phases = [f for fb, _, _ in items for f in fb]
        episodes = [any(fb) for fb, _, _ in items]
        by_phase = [sum(fb[i] for fb, _, _ in items if i < len(fb)) for i in range(guard.phases)]
        g = statistics.mean(x for _, x, _ in items)
        p = statistics.mean(y for _, _, y in items)
        out.append([label, run.name, suite, family, str(len(items)), f"{sum(phases) / len(phases):.2f}",
                    " / ".join(map(str, by_phase)),
                    f"{sum(episodes)}/{len(episodes)}", f"{g:+.3f}", f"{p:+.3f}", f"{g - p:+.3f}"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    table = [row for label in (GUARDED, GUARDED_HOLD) for run in args.runs for row in summarise(run, label)]
    command = f"python scripts/guard_firing.py {' '.join(map(str, args.runs))} --out {args.out}"
    thresholds = []
    for run in args.runs:
        guard = ObservationGuard.load(run / GUARD)
        thresholds.append([run.name, str(guard.rollouts), f"{guard.margin:g}",
                           " / ".join(f"{t:.2f}" for t in guard.thresholds)])
    text = "\n".join([
        "# Where the guarded closed loop fell back to its mean action\n",
        f"<!-- Written by `{command}`; do not edit by hand. -->\n",
        (f"Made by `{command}` from each run's `guard.json` and `eval.jsonl`. A phase fell back where the "
        "observation lay farther (root mean square of entries scaled by their spread over the training "
        "rollouts) from every training rollout's at that phase than the farthest training rollout lies from "
        "its nearest neighbour, times the margin; it then ran the policy's mean action there "
        "(`guarded-hold`: there and in every later phase of the episode). Each is paired with `ppo` on the "
        "same (task, episode seed) pairs.\n"),
        render_table([["run", "training rollouts", "margin", "threshold per phase"], *thresholds], "markdown"),
        "",
        render_table([["method", "run", "suite", "family", "episodes", "phases fallen back",
                       "episodes falling back, phase by phase", "episodes with a fallback",
                       "gain", "ppo gain", "gain - ppo"], *table], "markdown"),
        "",
    ])
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
