"""The default ``metactl train-controller`` over several controller seeds, as the README reports it.

    python scripts/controller_report.py --seeds 0 1 2 --runs runs --out docs/controller_results.md

Each seed runs ``train_controller`` with the built-in default config (the same function the CLI
calls) into ``RUNS/tc-s<seed>``; a finished run dir is read back instead of retrained (its wall
time is kept in ``RUNS/tc-s<seed>/wall_seconds.txt``). The report holds, from those run dirs'
``eval.jsonl``: every method's held-out scores (each seed's mean over the held-out tasks, then
mean ± std over seeds), the gain over base per held-out task, and the wall time of each run. The
whole file is written by this script; commentary about it lives elsewhere (docs/controller.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from metactl.commands.train_controller.config import resolve
from metactl.commands.train_controller.run import train_controller
from metactl.rundir import EVAL, SCHEDULE, atomic_write_text, read_jsonl
from metactl.score_parts import reported_parts
from metactl.tables import mean_std, render_table

WALL = "wall_seconds.txt"


def run_seed(seed: int, runs: Path, overrides: list[str]) -> tuple[Path, float]:
    out = runs / f"tc-s{seed}"
    if (out / SCHEDULE).is_file() and (out / WALL).is_file():
        return out, float((out / WALL).read_text())
    cfg, out = resolve("default", [*overrides, f"seed={seed}"], None, out)
    t0 = time.perf_counter()
    train_controller(cfg, out, resume=(out / "config.yaml").is_file(), progress=True)
    wall = time.perf_counter() - t0
    atomic_write_text(out / WALL, f"{wall:.1f}\n")
    return out, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("docs/controller_results.md"))
    args = ap.parse_args()

    per_seed: dict[str, list[dict]] = {}  # method -> one row of per-seed means per seed
    gains: dict[str, dict[int, list[float]]] = {}  # method -> task seed -> gains (one per controller seed)
    walls, tasks, policy = [], [], ""
    for seed in args.seeds:
        out, wall = run_seed(seed, args.runs, args.overrides)
        walls.append(wall)
        rows = read_jsonl(out / EVAL, appended=True)
        policy = rows[0]["label"]
        tasks = sorted({r["task_seed"] for r in rows})
        for label in dict.fromkeys(r["label"] for r in rows):
            mine = [r for r in rows if r["label"] == label]
            parts = reported_parts(mine[0]["scores"])
            mean = {p: statistics.mean(r["scores"][p] for r in mine) for p in parts}
            mean["gain"] = statistics.mean(r["scores"]["composite"] - r["base"]["composite"] for r in mine)
            per_seed.setdefault(label, []).append(mean)
            for r in mine:
                gains.setdefault(label, {}).setdefault(r["task_seed"], []).append(
                    r["scores"]["composite"] - r["base"]["composite"]
                )
    parts = [p for p in next(iter(per_seed.values()))[0] if p != "gain"]
    default_gain = statistics.mean(s["gain"] for s in per_seed.get("default", [{"gain": float("nan")}]))
    scores = [["method", *parts, "gain over base", "x default's gain"]]
    for label, seeds in per_seed.items():
        ratio = statistics.mean(s["gain"] for s in seeds) / default_gain if default_gain > 0 else float("nan")
        scores.append([label, *(mean_std([s[p] for s in seeds]) for p in parts),
                       mean_std([s["gain"] for s in seeds], signed=True), f"{ratio:.2f}x"])
    per_task = [["method", *(f"task {t}" for t in tasks)]]
    for label, by_task in gains.items():
        if label == policy:
            for i, seed in enumerate(args.seeds):
                per_task.append([f"{label} seed {seed}", *(f"{by_task[t][i]:+.3f}" for t in tasks)])
        else:  # fixed schedules: the same on every controller seed
            per_task.append([label, *(f"{by_task[t][0]:+.3f}" for t in tasks)])
    runs = [["controller seed", "wall time (training + evaluation)"]]
    runs += [[str(s), f"{w:.0f} s ({w / 60:.1f} min)"] for s, w in zip(args.seeds, walls)]
    cmd = f"python scripts/controller_report.py --seeds {' '.join(map(str, args.seeds))}" + (
        f" --set {' '.join(args.overrides)}" if args.overrides else ""
    )
    text = (
        "# The default `metactl train-controller`, over controller seeds\n\n"
        f"<!-- Written by `{cmd}`; do not edit by hand (commentary: docs/controller.md). -->\n\n"
        f"Made by `{cmd}`: the built-in default config (`configs/train/default.yaml`), controller seeds "
        f"{args.seeds}, judged on held-out task seeds {tasks}. The controller observes only the observe "
        "split (training-distribution probes no reported score uses).\n\n"
        "Held-out scores: each controller seed's mean over the held-out tasks, then mean ± std over the seeds "
        "(the fixed schedules are deterministic: std 0).\n\n"
        + render_table(scores, "markdown") + "\n\nGain over base per held-out task:\n\n"
        + render_table(per_task, "markdown") + "\n\nWall time per run, on this machine (2 CPU cores):\n\n"
        + render_table(runs, "markdown") + "\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
