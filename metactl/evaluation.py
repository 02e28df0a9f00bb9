"""Comparing methods on a set of tasks: the rows every evaluation produces, and their tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

PARTS = ["target/style", "target/truth", "heldout/style", "heldout/truth", "kl", "stability", "cka", "composite"]
# Parts where lower is better; every other part (and the gain) is better higher.
LOWER_IS_BETTER = {"kl"}


@dataclass
class Evaluation:
    rows: list[dict] = field(default_factory=list)  # label, task_seed, scores, base

    def by_label(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in self.rows:
            out.setdefault(r["label"], []).append(r)
        return out

    def summary(self) -> dict[str, dict]:
        """Per label: mean and std of every part, the gain over base, and the gain ratio to default."""
        groups = self.by_label()
        out = {}
        for label, rows in groups.items():
            stats = {}
            for k in PARTS:
                vals = [r["scores"][k] for r in rows]
                stats[k] = (statistics.mean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0)
            gains = [r["scores"]["composite"] - r["base"]["composite"] for r in rows]
            stats["gain"] = (statistics.mean(gains), statistics.pstdev(gains) if len(gains) > 1 else 0.0)
            out[label] = stats
        if "default" in out and out["default"]["gain"][0] > 0:
            for stats in out.values():
                stats["gain_vs_default"] = stats["gain"][0] / out["default"]["gain"][0]
        return out


def format_table(evaluation: Evaluation, columns: list[str] | None = None) -> list[list[str]]:
    """Rows of strings: method, mean +- std of each part, gain over base, gain / default's gain."""
    columns = columns or PARTS
    summary = evaluation.summary()
    table = [["method", *columns, "gain over base", "x default gain"]]
    for label, stats in summary.items():
        cells = [f"{stats[c][0]:.3f} ± {stats[c][1]:.3f}" for c in columns]
        ratio = stats.get("gain_vs_default")
        table.append([label, *cells, f"{stats['gain'][0]:+.3f} ± {stats['gain'][1]:.3f}", f"{ratio:.2f}x" if ratio is not None else "-"])
    return table


def format_comparison(evaluation: Evaluation, method: str, baseline: str = "default") -> list[list[str]]:
    """Parts as rows, methods side by side (mean ± std over tasks), then ``method - baseline``
    and whether that difference is in the better direction for the part."""
    summary = evaluation.summary()
    labels = list(summary)
    table = [["part", *labels, f"{method} - {baseline}", "better?"]]
    for part in [*PARTS, "gain"]:
        cells = [f"{summary[lb][part][0]:.3f} ± {summary[lb][part][1]:.3f}" for lb in labels]
        delta = summary[method][part][0] - summary[baseline][part][0]
        better = delta < 0 if part in LOWER_IS_BETTER else delta > 0
        verdict = "=" if abs(delta) < 5e-4 else ("yes" if better else "no")
        table.append([part if part != "gain" else "gain over base", *cells, f"{delta:+.3f}", verdict])
    return table
