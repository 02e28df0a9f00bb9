"""What each controller seed settled on, beside how it scored: one table per report.

    python scripts/averaged_shares.py docs/controller_results_wide.md --runs runs/wide \\
        --out docs/averaged_shares_wide.md

For every ``tc-s<seed>`` run dir of a ``scripts/controller_report.py`` run, reads ``averaged.yaml``
(the greedy policy's phase controls on 8 training tasks averaged into one schedule: what the seed
does on average) and writes its tool shares per phase (as a schedule stores them: a phase's steps go
to its tools in proportion to their shares) beside the seed's mean gain over base per suite, read
from the report's own per-seed table (``ppo`` and ``averaged`` rows). Reads files only; runs nothing.
Seeds are sorted by their gain on the last suite of the report (the held-out families, when the
report was made with ``eval_suites``), so what the good seeds share is visible at a glance. The
last column is what a user sees while training: the mean return (final composite minus the base's
on the training task) of the run's last ``--last`` episodes in its ``scores.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from lever_effect import read_report

from metactl.rundir import atomic_write_text, read_jsonl
from metactl.schedule import Schedule
from metactl.tables import render_table

TOOLS = ("sft", "dpo", "retain")


def shares(path: Path) -> list[tuple[float, ...]]:
    """Per phase, each tool's share in :data:`TOOLS` order (0 where the phase lacks the tool)."""
    return [tuple(p.tools[t].share if t in p.tools else 0.0 for t in TOOLS) for p in Schedule.load(path).phases]


def training_return(path: Path, last: int) -> float:
    """Mean return of the last ``last`` episodes of a run's ``scores.jsonl`` (an episode's return sits
    on its last phase row), read as the learning curve reads it (a torn last line skipped)."""
    rows = sorted((r for r in read_jsonl(path, appended=True) if r.get("return") is not None),
                  key=lambda r: r["episode"])
    tail = [r["return"] for r in rows[-last:]]
    return sum(tail) / len(tail)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a scripts/controller_report.py file")
    ap.add_argument("--runs", type=Path, required=True, help="the --runs dir that report was made from")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--last", type=int, default=16, help="training episodes the return column averages")
    args = ap.parse_args(argv)

    report = read_report(args.report, "ppo")
    suites = list(report)
    seeds = sorted(report[suites[0]]["seeds"]["ppo"])
    missing = [s for s in seeds if not (args.runs / f"tc-s{s}" / "averaged.yaml").is_file()]
    if missing:
        raise SystemExit(
            f"{args.runs}: no tc-s<seed>/averaged.yaml for seeds {missing}; is it the report's --runs dir?"
        )
    last = suites[-1] if len(suites) == 1 else next((s for s in suites if "heldout" in s), suites[-1])
    order = sorted(seeds, key=lambda s: -report[last]["seeds"]["ppo"][s])
    per_phase = {s: shares(args.runs / f"tc-s{s}" / "averaged.yaml") for s in seeds}
    n_phases = max(len(v) for v in per_phase.values())
    header = ["seed"] + [f"{label} {suite}" for suite in suites for label in ("ppo", "averaged")]
    header += [f"phase {i} sft / dpo / retain" for i in range(n_phases)]
    header += [f"training return, last {args.last} episodes"]
    rows = [header]
    for s in order:
        gains = [f"{report[suite]['seeds'][label][s]:+.3f}" for suite in suites for label in ("ppo", "averaged")]
        phases = [" / ".join(f"{x:.2f}" for x in ph) for ph in per_phase[s]]
        ret = training_return(args.runs / f"tc-s{s}" / "scores.jsonl", args.last)
        rows.append([str(s), *gains, *phases, f"{ret:+.3f}"])
    command = "python scripts/averaged_shares.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (
        "# Each controller seed's averaged schedule beside its gains\n\n"
        f"Made by `{command}` from [{args.report.name}]({args.report.name}) and the run dirs' `averaged.yaml`; "
        "do not edit by hand. Gains: each seed's mean gain over base per suite (`ppo`: the closed loop; `averaged`: "
        f"its phase controls averaged into one fixed schedule). Seeds sorted by `ppo` on `{last}`. Shares are "
        "relative within a phase (its steps go to its tools in proportion to them).\n\n"
        + render_table(rows, "markdown")
        + "\n"
    )
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
