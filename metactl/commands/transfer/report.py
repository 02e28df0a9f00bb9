"""``metactl transfer``'s report: the side-by-side comparison it prints and keeps as comparison.txt."""

from __future__ import annotations

from pathlib import Path

from metactl.commands.transfer.config import LEARNED, TransferConfig
from metactl.commands.transfer.run import TransferResult
from metactl.evaluation import format_comparison
from metactl.rundir import atomic_write_text
from metactl.tables import render_table

COMPARISON = "comparison.txt"


def comparison_text(cfg: TransferConfig, result: TransferResult, source: str | Path) -> str:
    """The layer map, what ran, and every score part of every method side by side with
    ``learned - default``."""
    procs = f", {result.processes} processes" if result.processes > 1 else ""
    head = (f"{cfg.run.model} on {cfg.run.suite}, task seeds {cfg.task_seeds}, {cfg.run.training.total_steps} "
            f"steps, {cfg.mode} mode from {source} (mean ± std over tasks, {result.seconds:.0f}s{procs}):")
    return f"{result.layers}\n{head}\n{render_table(format_comparison(result.evaluation, LEARNED))}\n"


def write_comparison(out: Path, text: str) -> Path:
    return atomic_write_text(out / COMPARISON, text)
