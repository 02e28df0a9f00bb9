"""Every table metactl prints or writes, rendered by one function.

Plain text in the terminal (right-aligned columns: readable at any width, easy to grep or paste)
and GitHub markdown in generated docs; the cells are the same strings either way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

FORMATS = ("text", "markdown")


def render_table(rows: Sequence[Sequence[str]], fmt: str = "text", title: str = "") -> str:
    """``rows[0]`` is the header. Short rows are padded with empty cells."""
    if fmt not in FORMATS:
        raise ValueError(f"table format {fmt!r}; allowed: {', '.join(FORMATS)}")
    width = max(len(r) for r in rows)
    rows = [[str(c) for c in r] + [""] * (width - len(r)) for r in rows]
    if fmt == "markdown":
        rows = [[c.replace("|", "\\|") for c in r] for r in rows]  # "sft|dpo" would split a cell
        lines = ["| " + " | ".join(rows[0]) + " |", "|---" * width + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(width)]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows]
    return "\n".join([title, *lines] if title else lines)


def mean_std(values: Sequence[float], signed: bool = False, digits: int = 3) -> str:
    """``mean ± std`` (population std; 0 for one value) of the finite values, ``-`` for none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.{digits}f} ± {sd:.{digits}f}"


# Two-sided 97.5% quantiles of Student's t by degrees of freedom (no scipy dependency for 30 numbers).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_interval(diffs: Sequence[float]) -> tuple[float, float]:
    """Mean of paired differences and the half width of its 95% Student-t interval (n - 1 df, sample
    std; beyond 31 pairs the 30-df quantile, slightly wide); half width nan for a single pair."""
    n = len(diffs)
    m = statistics.mean(diffs)
    if n < 2:
        return m, math.nan
    return m, T975[min(n - 1, len(T975)) - 1] * statistics.stdev(diffs) / n**0.5
