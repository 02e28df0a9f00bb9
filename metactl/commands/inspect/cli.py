"""``metactl inspect``: its options and help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metactl.commands.options import Quiet


def command(
    run_dir: Annotated[Path, typer.Argument(help="a train-controller run dir (its --out)")],
    task_seed: Annotated[int | None, typer.Option(
        help="task to inspect on (default: the run's schedule_task_seed, the one schedule.yaml shows)"
    )] = None,
    format_: Annotated[str, typer.Option("--format", help=(
        "table: print the tables; json: print report.json; html: also write one self-contained report.html"
    ))] = "table",
    out: Annotated[Path | None, typer.Option(
        help="output dir for report.json, the PNGs and report.html (default RUN_DIR/inspect/task-<seed>)"
    )] = None,
    workers: Annotated[int, typer.Option(help=(
        "processes that retrain the schedule variants (phase ablations, reorderings, random baseline) beside the "
        "main one; 0 trains them in this process afterwards"
    ))] = 2,
    quiet: Quiet = False,
) -> None:
    """Show what the controller decided, why, and what each tool did to the model.

    On one task the policy acts greedily (closed loop for ppo: each phase chosen from that episode's own
    observations) beside the default schedule, then: the decisions per phase, tool, layer group and module kind;
    the learning curve with default / expert / random as lines; exact Shapley values of every score part over tools
    and over layer groups (remove an adapter, or a group's share of all of them, and re-score) and each phase's
    training left out; the schedule retrained with phases swapped or a tool's phases merged; which observation
    features move each control; the gradient cosine between tools per layer group over training, CKA drift per
    layer, and each behaviour read out at every layer (inside the model, or only at the output?).
    """
    from metactl.commands.inspect.report import check_format, render_terminal, write_report
    from metactl.commands.inspect.run import inspect_run

    check_format(format_)
    report = inspect_run(run_dir, task_seed=task_seed, out=out, workers=workers, progress=not quiet)
    paths = write_report(report, Path(report["out"]), format_)
    if format_ == "json":
        typer.echo(paths["json"].read_text())
        return
    if format_ == "table":
        typer.echo(render_terminal(report))
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths.values())}")
