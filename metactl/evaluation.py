"""Comparing methods on a set of tasks: the rows every evaluation produces, and their tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from metactl.score_parts import is_better, reported_parts


@dataclass
class Evaluation:
    rows: list[dict] = field(default_factory=list)  # label, task_seed, scores, base

    def by_label(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in self.rows:
            out.setdefault(r["label"], []).append(r)
        return out

    @property
    def parts(self) -> list[str]:
        """The score parts every table of this evaluation shows (from the suite's behaviours). Rows
        of task families with different behaviours share their per-split parts instead."""
        if not self.rows:
            return []
        common = set.intersection(*(set(r["scores"]) for r in self.rows))
        first = reported_parts(self.rows[0]["scores"])
        parts = [p for p in first if p in common]
        if len(parts) < len(first):
            parts = [p for p in ("target", "heldout") if p in common] + [p for p in parts if "/" not in p]
        return parts

    def suites(self) -> list[str]:
        """The suites the rows come from, in order (rows from before suites were recorded: none)."""
        return list(dict.fromkeys(r["suite"] for r in self.rows if r.get("suite")))

    def of_suite(self, suite: str | None) -> Evaluation:
        """The rows of ``suite`` (None: rows that name no suite, or every row when none does)."""
        if suite is None and not self.suites():
            return self
        return Evaluation([r for r in self.rows if r.get("suite") == suite])

    def summary(self) -> dict[str, dict]:
        """Per label: mean and std of every part, the gain over base, and the gain ratio to default."""
        out = {}
        for label, rows in self.by_label().items():
            stats = {}
            for k in self.parts:
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
    columns = columns or evaluation.parts
    summary = evaluation.summary()
    table = [["method", *columns, "gain over base", "x default gain"]]
    for label, stats in summary.items():
        cells = [f"{stats[c][0]:.3f} ± {stats[c][1]:.3f}" for c in columns]
        ratio = stats.get("gain_vs_default")
        gain = f"{stats['gain'][0]:+.3f} ± {stats['gain'][1]:.3f}"
        table.append([label, *cells, gain, f"{ratio:.2f}x" if ratio is not None else "-"])
    return table


def format_comparison(evaluation: Evaluation, method: str, baseline: str = "default") -> list[list[str]]:
    """Parts as rows, methods side by side (mean ± std over tasks), then ``method - baseline``
    and whether that difference is in the better direction for the part."""
    summary = evaluation.summary()
    labels = list(summary)
    table = [["part", *labels, f"{method} - {baseline}", "better?"]]
    for part in [*evaluation.parts, "gain"]:
        cells = [f"{summary[lb][part][0]:.3f} ± {summary[lb][part][1]:.3f}" for lb in labels]
        new, old = summary[method][part][0], summary[baseline][part][0]
        verdict = "=" if abs(new - old) < 5e-4 else ("yes" if is_better(part, new, old) else "no")
        table.append([part if part != "gain" else "gain over base", *cells, f"{new - old:+.3f}", verdict])
    return table
