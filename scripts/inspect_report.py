"""The figures of docs/inspect.md: ``metactl inspect`` on a default train-controller run.

    python scripts/inspect_report.py --run runs/tc-s0 --out docs/inspect_results.md

Runs the same function ``metactl inspect RUN --format html`` calls (on the run's
``schedule_task_seed`` unless ``--task-seed`` is given), copies its PNGs to ``docs/inspect/`` and
writes every table of the report as markdown to ``--out``. The run dir comes from
``scripts/controller_report.py`` (``runs/tc-s<seed>``). docs/inspect.md comments on these
figures and cites only numbers this file holds (``tests/test_figures.py`` checks it).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from metactl.commands.inspect.report import write_report
from metactl.commands.inspect.run import inspect_run
from metactl.commands.inspect.tables import all_tables
from metactl.rundir import atomic_write_text
from metactl.tables import render_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/tc-s0"))
    ap.add_argument("--task-seed", type=int, default=None)
    ap.add_argument("--pngs", type=Path, default=Path("docs/inspect"))
    ap.add_argument("--out", type=Path, default=Path("docs/inspect_results.md"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    report = inspect_run(args.run, task_seed=args.task_seed, workers=2, progress=True)
    wall = time.perf_counter() - t0
    paths = write_report(report, Path(report["out"]), "html")
    args.pngs.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        if Path(path).suffix == ".png":
            shutil.copyfile(path, args.pngs / Path(path).name)

    cmd = "python scripts/inspect_report.py" + (f" --run {args.run}" if args.run != Path("runs/tc-s0") else "") + (
        f" --task-seed {args.task_seed}" if args.task_seed is not None else ""
    )
    parts = [
        "# `metactl inspect` on the default train-controller run\n",
        f"<!-- Written by `{cmd}`; do not edit by hand (commentary: docs/inspect.md). -->\n",
        (
            f"Made by `{cmd}`: `metactl inspect {args.run} --format html` on task {report['task_seed']} "
            f"(policy {report['policy']}, {report['model']}, suite {report['suite']}, {report['total_steps']} steps, "
            f"{report['layer_groups']} layer groups). {report['retrained_episodes']} variant episodes retrained, "
            f"{report['model_scorings']} ablation scorings; {wall:.0f} s wall on this machine (2 CPU cores; "
            "a rerun reuses the retrained variants from jobs.jsonl). The PNGs are in docs/inspect/.\n"
        ),
    ]
    for section, tables in all_tables(report).items():
        parts.append(f"## {section}\n")
        for title, headers, rows in tables:
            parts.append(f"{title}:\n\n" + render_table([headers, *rows], "markdown") + "\n")
    text = "\n".join(parts)
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
