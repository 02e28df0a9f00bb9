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
