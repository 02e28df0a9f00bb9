"""Which parts of a hand schedule carry its score: variants of ``expert`` against ``expert`` itself.

    python scripts/schedule_ablation.py --variants output1 dpo-late no-retain \
        --set eval_episodes=3 eval_task_seeds=[1000,...,1017] run.suite=train-families-wide \
        eval_suites=[heldout-families] --baselines runs/combo/baselines --runs runs/ablation \
        --out docs/schedule_ablation.md

Each variant is ``expert`` with one thing changed (below), written to ``RUNS/<variant>.yaml`` and
evaluated like the report's fixed schedules (``controller_report.run_baselines``: the population
engine, the config's evaluation pairs, rows kept in ``RUNS/<variant>/eval.jsonl`` and read back
when there). ``expert``'s own rows come from ``--baselines`` (a ``controller_report.py`` baselines
dir on the same pairs), so every difference is paired on the same (suite, task seed, episode seed).
The learned controller's share-only action space (``env.controls=share``) holds output scales at
the prior's, so ``output1`` asks whether that space can express what ``expert`` gets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from controller_report import pair_key, run_baselines

from metactl.commands.train_controller.config import resolve
from metactl.evaluation import row_gain
from metactl.rundir import atomic_write_text
from metactl.schedule import Schedule
from metactl.tables import render_table, t_interval

BASE = "expert"


def _output1(d: dict) -> None:
    for ph in d["phases"]:
        for c in ph["tools"].values():
            c["output"] = 1.0


def _dpo_late(d: dict) -> None:
    d["phases"][1]["tools"]["dpo"]["share"] = 0.0


def _no_retain(d: dict) -> None:
    d["phases"][-1]["tools"]["retain"]["share"] = 0.0


VARIANTS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "output1": ("every output scale 1 (no DPO output 0.8 in the last phase): inside the share-only space",
                _output1),
    "dpo-late": ("no DPO in the second phase (SFT alone for the first half, as the learned schedules run)",
                 _dpo_late),
    "no-retain": ("no retain in the last phase", _no_retain),
}


def variant_schedule(name: str) -> Schedule:
    d = Schedule.named(BASE).to_dict()  # a fresh dict: the variant edits it in place
    VARIANTS[name][1](d)
    d["name"] = f"{BASE}-{name}"
    return Schedule.from_dict(d, f"variant {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), required=True)
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--baselines", type=Path, required=True, help="controller_report.py baselines dir holding "
                    f"{BASE!r}'s rows on the same pairs")
    ap.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--out", type=Path, default=Path("docs/schedule_ablation.md"))
    args = ap.parse_args()

    cfg, _ = resolve("default", args.overrides, None, args.runs)
    base_rows, _ = run_baselines(args.baselines, args.overrides)
    base = {pair_key(r): row_gain(r) for r in base_rows if r["label"] == BASE}
    args.runs.mkdir(parents=True, exist_ok=True)
    suites = [cfg.run.suite, *cfg.eval_suites]
    header = ["variant", "what changes", *(f"{s}: gain (paired minus {BASE}, 95% interval)" for s in suites)]
    table = [header]

    def suite_of(r: dict) -> str:
        return r.get("suite") or cfg.run.suite  # rows of run.suite may carry no suite

    rows_of: dict[str, list[dict]] = {BASE: [r for r in base_rows if r["label"] == BASE]}
    for name in args.variants:
        path = variant_schedule(name).save(args.runs / f"{name}.yaml")
        rows, _ = run_baselines(args.runs / name, [*args.overrides, f"compare=[{path}]"])
        rows_of[name] = [r for r in rows if suite_of(r) in suites and pair_key(r) in base]
        cells = []
        for suite in suites:
            mine = [r for r in rows_of[name] if suite_of(r) == suite]
            diffs = [row_gain(r) - base[pair_key(r)] for r in mine]
            m, h = t_interval(diffs)
            cells.append(f"{statistics.mean(row_gain(r) for r in mine):+.3f} ({m:+.3f} [{m - h:+.3f}, {m + h:+.3f}], "
                         f"{len(diffs)} pairs)")
        table.append([name, VARIANTS[name][0], *cells])
    keys = sorted({(suite_of(r), r["family"]) for name in args.variants for r in rows_of[name]})
    fam = [["suite", "family", BASE, *args.variants]]
    for key in keys:
        means = [statistics.mean(row_gain(r) for r in rows_of[label] if (suite_of(r), r["family"]) == key)
                 for label in [BASE, *args.variants]]
        fam.append([*key, *(f"{m:+.3f}" for m in means)])
    cmd = (f"python scripts/schedule_ablation.py --variants {' '.join(args.variants)} --set {' '.join(args.overrides)} "
           f"--baselines {args.baselines} --runs {args.runs} --out {args.out}")
    text = (
        f"# Variants of `{BASE}` against `{BASE}`\n\n"
        f"<!-- Written by `{cmd}`; do not edit by hand. -->\n\n"
        f"Made by `{cmd}`. Mean gain over base per suite; in brackets the mean paired difference from "
        f"`{BASE}` on the same (task seed, episode seed) pairs and its 95% Student-t interval over pairs.\n\n"
        + render_table(table, "markdown") + "\n\nMean gain per task family:\n\n" + render_table(fam, "markdown") + "\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
