"""``metactl sweep``'s report: every finished trial, and one row per setting (seeds pooled)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from metactl.commands.sweep.config import TRIAL_FILE, SweepConfig
from metactl.score_parts import behaviour_parts, sign
from metactl.tables import mean_std, render_table


def collect(out: Path) -> list[dict]:
    """Every finished trial under ``out/trials`` (the sweep's record, whatever Tune kept)."""
    rows = []
    for path in sorted((out / "trials").glob(f"*/{TRIAL_FILE}")):
        data = json.loads(path.read_text())
        params = {k: v for k, v in data["params"].items() if k != "__trial_index__"}
        rows.append({"trial": path.parent.name, "params": params, "seed": data["metrics"].get("controller_seed"),
                     "policy": data.get("policy"), "metrics": data["metrics"]})
    return rows


def summary_table(rows: list[dict], metric: str) -> list[list[str]]:
    """One row per setting (seeds pooled): mean ± std over its trials of every part, best first."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["params"].items()) if k != "seed") or "(all)"
        groups.setdefault(key, []).append(r)
    order = sorted(groups, key=lambda k: -sign(metric) * statistics.mean(r["metrics"][metric] for r in groups[k]))
    cols = ["composite", *behaviour_parts(rows[0]["metrics"] if rows else []), "kl"]
    table = [["setting", "trials", "seeds", "gain over base", *cols]]
    for key in order:
        trials = groups[key]
        seeds = sorted({r["seed"] for r in trials if r["seed"] is not None})
        table.append([key, str(len(trials)), ",".join(map(str, seeds)),
                      mean_std([r["metrics"]["gain"] for r in trials], signed=True),
                      *[mean_std([r["metrics"][c] for r in trials]) for c in cols]])
    return table


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_text(cfg: SweepConfig, rows: list[dict], table: list[list[str]], seconds: float) -> str:
    """``summary.md``: what was swept, and the table."""
    what = (f"grid over {', '.join(cfg.grid)}" if cfg.mode == "grid"
            else f"Optuna TPE over {', '.join(cfg.search.space)}, {cfg.search.num_samples} settings x "
                 f"{cfg.search.repeats} seeds")
    return (f"# Sweep: {what}\n\n{len(rows)} finished trials, scored on task seeds {cfg.task_seeds} "
            f"(mean ± std over each setting's trials; best by {cfg.metric} first). This run: {seconds:.0f} s.\n\n"
            + render_table(table, "markdown") + "\n")
