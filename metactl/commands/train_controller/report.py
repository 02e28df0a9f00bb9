"""``train-controller``'s report: the held-out table it prints and the learning curve it draws."""

from __future__ import annotations

import statistics
from pathlib import Path

from metactl.evaluation import Evaluation, format_table
from metactl.rundir import SCORES, atomic_write_with, read_jsonl
from metactl.tables import render_table

LEARNING_CURVE = "learning_curve.png"


def result_text(eval_task_seeds: list[int], evaluation: Evaluation, episodes: int, seconds: float,
                searched: int = 0) -> str:
    """The final tables: every method's score parts on the held-out tasks (mean ± std over tasks),
    one table per evaluated suite (run.suite first, then eval_suites)."""
    how = f" (the first {searched} a random search, then PPO)" if searched else ""
    head = f"{episodes} episodes{how}, {seconds:.0f}s; held-out task seeds {eval_task_seeds} (mean ± std over tasks)"
    suites = evaluation.suites() or [None]
    parts = [head]
    for suite in suites:
        part = evaluation.of_suite(suite)
        parts.append((f"{suite}:\n" if suite else "") + render_table(format_table(part)))
    return "\n".join(parts)


def plot_learning_curve(out: Path, evaluation: Evaluation) -> Path | None:
    """``learning_curve.png``: each training episode's return, a running mean, and the held-out
    gains of every evaluated method as reference lines."""
    rows = [r for r in read_jsonl(out / SCORES, appended=True) if r.get("return") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows.sort(key=lambda r: r["episode"])
    x = [r["episode"] for r in rows]
    y = [r["return"] for r in rows]
    k = max(1, len(y) // 8)
    running = [statistics.mean(y[max(0, i - k + 1) : i + 1]) for i in range(len(y))]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.scatter(x, y, s=10, alpha=0.5, label="training episode return (task drawn from the training range)")
    ax.plot(x, running, lw=2, label=f"running mean over {k}")
    for i, (label, stats) in enumerate(evaluation.summary().items()):
        ax.axhline(stats["gain"][0], ls="--", lw=1.2, color=f"C{i + 2}",
                   label=f"{label}: mean gain on held-out tasks {stats['gain'][0]:+.3f}")
    ax.set_xlabel("episode")
    ax.set_ylabel("final composite - base composite")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    try:
        return atomic_write_with(out / LEARNING_CURVE, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)
