"""Is there something for a controller to learn? Run schedules over task seeds and compare.

    python scripts/headroom.py --schedules default expert --task-seeds 0 1 2 --out docs/headroom.md

Every schedule runs through the same runner as everything else. Prints, per schedule, the mean
and spread over task seeds of every score part, the gain over the base, and how many seeds reach
both behaviours (style >= 0.8 and truth within 0.05 of the base, on held-out inputs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from metactl.config import load_config
from metactl.runner import Engine
from metactl.schedule import Schedule
from metactl.tables import mean_std, render_table

COLUMNS = ["target/style", "target/truth", "heldout/style", "heldout/truth", "kl", "cka", "composite"]


def both_reached(scores: dict, base: dict) -> bool:
    return scores["heldout/style"] >= 0.8 and scores["heldout/truth"] >= base["heldout/truth"] - 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedules", nargs="+", default=["default", "expert"])
    ap.add_argument("--task-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0, help="training seed (adapter init, batches)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()

    cfg = load_config(None, ["training.score_every_phase=false", *args.overrides])
    schedules = {name: Schedule.named(name) for name in args.schedules}
    tools = sorted({t for s in schedules.values() for t in s.tool_names})
    t0 = time.time()
    engine = Engine(cfg, tools=tools, progress=True)
    results: dict[str, list[dict]] = {name: [] for name in ["base", *schedules]}
    first = next(iter(schedules))
    trajectory: list[list[dict]] = []  # per task seed, per phase: the first schedule's scores
    bases = {}
    for ts in args.task_seeds:
        engine.load_task(ts)
        bases[ts] = engine.task.base_scores
        results["base"].append(engine.task.base_scores)
        for name, sched in schedules.items():
            t1 = time.time()
            engine.config.training.score_every_phase = name == first
            phases = engine.run(sched, seed=args.seed)
            final = phases[-1].scores
            if name == first:
                trajectory.append([engine.task.base_scores] + [p.scores for p in phases])
            results[name].append({**final, "_both": both_reached(final, bases[ts]), "_s": time.time() - t1})
            print(f"task {ts} {name:>12}: " + " ".join(f"{c}={final[c]:.3f}" for c in COLUMNS), flush=True)

    base_comp = statistics.mean(r["composite"] for r in results["base"])
    lines = [["schedule", *COLUMNS, "gain over base", "both reached"]]
    for name, rows in results.items():
        cells = [mean_std([r[c] for r in rows]) for c in COLUMNS]
        gain = statistics.mean(r["composite"] for r in rows) - base_comp
        both = f"{sum(r.get('_both', False) for r in rows)} of {len(rows)}" if name != "base" else "-"
        lines.append([name, *cells, f"{gain:+.3f}", both])
    table = render_table(lines, "markdown")
    print(table)
    traj = [["after", *COLUMNS]]
    labels = ["base"] + [f"phase {i}: " + "+".join(t for t, c in p.tools.items() if c.share > 0)
                         for i, p in enumerate(schedules[first].phases)]
    for i, label in enumerate(labels):
        traj.append([label, *(f"{statistics.mean(run[i][c] for run in trajectory):.3f}" for c in COLUMNS)])
    traj_table = render_table(traj, "markdown")
    print(traj_table)
    per_seed = [["schedule", *(f"task seed {ts}" for ts in args.task_seeds)]]
    for name, rows in results.items():
        per_seed.append([name, *(f"{r['composite']:.3f}" for r in rows)])
    per_seed_table = render_table(per_seed, "markdown")
    print(per_seed_table)
    wall = time.time() - t0
    print(f"wall time {wall:.0f}s")
    if args.out:
        cmd = "python scripts/headroom.py " + " ".join(
            ["--schedules", *args.schedules, "--task-seeds", *map(str, args.task_seeds), "--seed", str(args.seed)]
            + (["--set", *args.overrides] if args.overrides else []))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"# Headroom on `{cfg.model}` / `{cfg.suite}`\n\nMade by `{cmd}` ({wall:.0f} s on this machine, "
            f"{cfg.training.total_steps} steps per episode, task seeds {args.task_seeds}).\n\n"
            "Mean ± std over task seeds of the final scores. *both reached*: held-out style >= 0.8 and "
            "held-out truth within 0.05 of the base.\n\n" + table + "\n\n"
            "## Composite per task seed\n\n" + per_seed_table + "\n\n"
            f"## Phase by phase: `{first}` (mean over task seeds)\n\n" + traj_table + "\n"
        )


if __name__ == "__main__":
    main()
