"""Comparing methods on a set of tasks: the rows every evaluation produces, and their tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from metactl.score_parts import is_better, reported_parts


def row_gain(row: dict) -> float:
    """Composite gain over the base; a run that diverged scores ``-penalty``, as the env's return does
    (a blow-up is the worst outcome a method can have, not a row to leave out)."""
    if row.get("diverged"):
        return -float(row["penalty"])
    return row["scores"]["composite"] - row["base"]["composite"]


def finished_rows(rows: list[dict]) -> list[dict]:
    """The rows whose run finished (a diverged run's row has no scores)."""
    return [r for r in rows if not r.get("diverged")]


@dataclass
class Evaluation:
    rows: list[dict] = field(default_factory=list)  # label, task_seed, scores, base (diverged rows: no scores)

    def by_label(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in self.rows:
            out.setdefault(r["label"], []).append(r)
        return out

    @property
    def parts(self) -> list[str]:
        """The score parts every table of this evaluation shows (from the suite's behaviours). Rows
        of task families with different behaviours share their per-split parts instead."""
        scored = finished_rows(self.rows)
        if not scored:
            return []
        common = set.intersection(*(set(r["scores"]) for r in scored))
        first = reported_parts(scored[0]["scores"])
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

    def diverged(self) -> dict[str, int]:
        """Per label, how many of its runs diverged (labels with none left out)."""
        out: dict[str, int] = {}
        for r in self.rows:
            if r.get("diverged"):
                out[r["label"]] = out.get(r["label"], 0) + 1
        return out

    def summary(self) -> dict[str, dict]:
        """Per label: mean and std of every part, the gain over base, and the gain ratio to default.
        The parts average the runs that finished (a diverged run has no scores; nan if none did); the
        gain averages every run, a diverged one at ``-penalty`` (:func:`row_gain`)."""
        out = {}
        for label, rows in self.by_label().items():
            stats = {}
            scored = finished_rows(rows)
            for k in self.parts:
                vals = [r["scores"][k] for r in scored]
                stats[k] = _mean_std(vals)
            stats["gain"] = _mean_std([row_gain(r) for r in rows])
            out[label] = stats
        if "default" in out and out["default"]["gain"][0] > 0:
            for stats in out.values():
                stats["gain_vs_default"] = stats["gain"][0] / out["default"]["gain"][0]
        return out


def _mean_std(vals: list[float]) -> tuple[float, float]:
    if not vals:
        return float("nan"), float("nan")
    return statistics.mean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0


def format_table(evaluation: Evaluation, columns: list[str] | None = None) -> list[list[str]]:
    """Rows of strings: method, mean +- std of each part, gain over base, gain / default's gain (and,
    when any run diverged, how many of each method's runs did)."""
    columns = columns or evaluation.parts
    summary = evaluation.summary()
    diverged = evaluation.diverged()
    total = {label: len(rows) for label, rows in evaluation.by_label().items()}
    table = [["method", *columns, "gain over base", "x default gain", *(["diverged"] if diverged else [])]]
    for label, stats in summary.items():
        cells = [f"{stats[c][0]:.3f} ± {stats[c][1]:.3f}" for c in columns]
        ratio = stats.get("gain_vs_default")
        gain = f"{stats['gain'][0]:+.3f} ± {stats['gain'][1]:.3f}"
        extra = [f"{diverged.get(label, 0)}/{total[label]}"] if diverged else []
        table.append([label, *cells, gain, f"{ratio:.2f}x" if ratio is not None else "-", *extra])
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
