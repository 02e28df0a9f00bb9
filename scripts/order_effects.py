"""Does the order of the tools matter? The same tools at equal total steps, in different orders.

    python scripts/order_effects.py --model proxy-tiny --task-seeds 1000 1001 1002 --seeds 0 1 2 \
        --controller runs/newtools/tc-s0 runs/newtools/tc-s3 runs/newtools/tc-s4 --out docs/order.md
    python scripts/order_effects.py --model proxy-large --task-seeds 1000 1001 1002 --seeds 0 1 2 \
        --controller runs/newtools/tc-s0 runs/newtools/tc-s3 runs/newtools/tc-s4 --jobs 2 --out docs/order_large.md

Every order runs through the same runner as everything else (``Engine.run``), on every (task seed,
episode seed) pair, with ``grpo`` added to the run's tools. ``-> merge ->`` folds the first tool's
adapter into the base at its phase's end (schedule ``merge``), so the second tool trains a fresh
adapter against the merged model as its reference. With ``--controller RUN_DIR ...`` (``train-controller``
runs whose tools include ``grpo``), each controller also acts closed loop on every pair, deciding shares
and merges phase by phase (one row per run dir); task seeds from 1000 are outside every training range.
Reported per order: every score part (mean ± std over the pairs), the interference reading after the
last phase (the gradient cosine between two tools' base-weight gradients, mean over layer groups), and
where each behaviour sits inside the model (the per-layer readout of ``metactl inspect``: the share of the output's gain
over the base already readable one layer below the output; 1 is a behaviour formed inside the
model, 0 one that appears at the output alone). Then each order's composite against ``SFT -> DPO``,
paired on the same (task, episode seed) pairs, with the 95% t interval: an interval that excludes 0
is an order effect beyond seed noise. ``--jobs N`` splits the pairs over N processes, each with its own
engine; every run depends on its pair alone, so the figures are the same as with one process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from metactl.commands.inspect.readout import layer_readout, share_below_output
from metactl.config import load_config
from metactl.interference import is_cosine
from metactl.rundir import atomic_write_text
from metactl.runner import Engine
from metactl.schedule import Schedule, parse_schedule
from metactl.tables import mean_std, render_table, t_interval
from metactl.workers import exit_with_parent

ORDERS = {
    "SFT -> DPO": [{"sft": 1}, {"dpo": 1}],
    "SFT -> merge -> DPO": [{"sft": 1, "merge": ["sft"]}, {"dpo": 1}],
    "DPO -> SFT": [{"dpo": 1}, {"sft": 1}],
    "SFT -> GRPO": [{"sft": 1}, {"grpo": 1}],
    "SFT -> merge -> GRPO": [{"sft": 1, "merge": ["sft"]}, {"grpo": 1}],
    "GRPO -> SFT": [{"grpo": 1}, {"sft": 1}],
    "SFT -> DPO -> GRPO": [{"sft": 1}, {"dpo": 1}, {"grpo": 1}],
    "interleaved (SFT, DPO, GRPO 1:1:1)": [{"sft": 1, "dpo": 1, "grpo": 1}],
}
REFERENCE = "SFT -> DPO"
HELD_OUT = ("heldout/style", "heldout/truth")  # the behaviours whose place in the model is read out
PARTS = ("target/style", "target/truth", "heldout/style", "heldout/truth", "stability", "cka", "composite")


def order_schedule(name: str, phases: list[dict], groups: int) -> Schedule:
    """Equal phases, each tool at ``share``; a phase's ``merge`` (a list of tools) folds those in at its end."""
    def phase(p: dict) -> dict:
        tools = {t: {"share": s} for t, s in p.items() if t != "merge"}
        return {"fraction": 1 / len(phases), "tools": tools, **({"merge": p["merge"]} if "merge" in p else {})}

    return parse_schedule({"schema_version": 2, "name": name, "layer_groups": groups,
                           "phases": [phase(p) for p in phases]})


MAXRIGHT = "maxright (SFT, DPO)"


def run_pairs(overrides: list[str], controllers: list[Path], pairs: list[tuple[int, int]],
              progress: Callable[[int], object] | None = None, worker: int | None = None) -> list[tuple[str, dict]]:
    """Every order (and each controller, closed loop) on ``pairs``, on one engine: (order, row) per run.
    A ``worker`` (a process of ``--jobs``) shows its own progress bar, closed when its pairs are done."""
    from metactl.commands.inspect.source import load_run_dir

    cfg = load_config(None, overrides)
    engine = Engine(cfg, progress=False)
    groups = cfg.training.layer_groups
    schedules: dict[str, Schedule | None] = {n: order_schedule(n, phases, groups) for n, phases in ORDERS.items()}
    schedules[MAXRIGHT] = Schedule.named("maxright", groups)
    learned = {f"learned, {d.name} (closed loop)": load_run_dir(d) for d in controllers}
    schedules.update(dict.fromkeys(learned))  # acts closed loop: its schedule is what it decides on each pair
    if worker is None:
        return _run_pairs(engine, schedules, learned, pairs, progress)
    with tqdm(total=len(schedules) * len(pairs), desc=f"orders, process {worker}", unit="run", position=worker) as bar:
        return _run_pairs(engine, schedules, learned, pairs, bar.update)


def _run_pairs(engine: Engine, schedules: dict[str, Schedule | None], learned: dict, pairs: list[tuple[int, int]],
               progress: Callable[[int], object] | None) -> list[tuple[str, dict]]:
    from metactl.commands.inspect.rollout import run_policy

    out: list[tuple[str, dict]] = []
    for task in sorted({t for t, _ in pairs}):
        engine.load_task(task)
        with engine.model.disable_adapter():
            base_read = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
        base = engine.task.base_scores
        for seed in (s for t, s in pairs if t == task):
            for name, sched in schedules.items():
                merged = 0
                if sched is None:
                    trace = run_policy(engine, learned[name], task, seed, name)
                    final = trace.final
                    merged = sum(len(p.merge.tools) for p in trace.schedule.phases if p.merge)
                else:
                    final = engine.run(sched, seed=seed)[-1].scores
                # The model as it ends: every adapter a phase trained stays on (untrained ones are zero).
                reading = engine.gradient_cosines(rows=8)
                engine.adapters.activate(engine.tool_names)
                read = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
                out.append((name, {
                    "task": task, "seed": seed, "scores": final, "base": base, "merges": merged,
                    "cos": {k: statistics.mean(v) for k, v in reading.items() if is_cosine(k)},
                    "below": {k: share_below_output(read[k], base_read[k]) for k in HELD_OUT},
                }))
                if progress:
                    progress(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="proxy-tiny")
    ap.add_argument("--suite", default="style-vs-truth")
    ap.add_argument("--task-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="episode seeds per task")
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: the run config's)")
    ap.add_argument("--controller", type=Path, nargs="*", default=[],
                    help="train-controller run dirs (grpo among their tools): each policy acts closed loop")
    ap.add_argument("--jobs", type=int, default=1,
                    help="processes, each with its own engine, the (task, episode seed) pairs split over them")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from metactl.commands.inspect.source import load_run_dir

    learned = {f"learned, {d.name} (closed loop)": load_run_dir(d) for d in args.controller}
    # The controllers' layer groups when they act (the fixed orders train every group alike either way).
    groups = {rd.config.run.training.layer_groups for rd in learned.values()}
    if len(groups) > 1:
        raise SystemExit(f"--controller: the run dirs control different layer groups ({sorted(groups)}); give one kind")
    overrides = [f"model={args.model}", f"suite={args.suite}", "tools.grpo={}",
                 *([f"training.layer_groups={groups.pop()}"] if groups else []),
                 "training.score_every_phase=false",
                 *([f"training.total_steps={args.steps}"] if args.steps else [])]
    cfg = load_config(None, overrides)
    pairs = [(task, seed) for task in args.task_seeds for seed in args.seeds]
    names = [*ORDERS, MAXRIGHT, *learned]
    jobs = max(1, min(args.jobs, len(pairs)))
    start = time.perf_counter()
    if jobs == 1:
        with tqdm(total=len(names) * len(pairs), desc="orders", unit="run") as bar:
            done = run_pairs(overrides, args.controller, pairs, bar.update)
    else:  # every run is a function of its (task, episode seed) pair alone: the split changes no figure
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent) as pool:
            futures = [pool.submit(run_pairs, overrides, args.controller, pairs[i::jobs], worker=i)
                       for i in range(jobs)]
            done = [r for f in futures for r in f.result()]
    rows: dict[str, list[dict]] = {name: [] for name in names}
    merges: list[int] = []  # merges the learned controllers made per run
    for name, row in sorted(done, key=lambda nr: (nr[1]["task"], nr[1]["seed"])):
        rows[name].append(row)
        if name in learned:
            merges.append(row["merges"])
    wall = time.perf_counter() - start
    trained_on = " and ".join(sorted({rd.config.run.model for rd in learned.values()}))
    n_pairs = len(args.task_seeds) * len(args.seeds)
    lines = [
        f"# Order effects ({args.model}, {args.suite})", "",
        (f"<!-- Written by `python scripts/order_effects.py --model {args.model} --suite {args.suite} --task-seeds "
        f"{' '.join(map(str, args.task_seeds))} --seeds {' '.join(map(str, args.seeds))}"
        f"{f' --steps {args.steps}' if args.steps else ''}"
        f"{' --controller ' + ' '.join(map(str, args.controller)) if args.controller else ''}"
        f"{f' --jobs {jobs}' if jobs > 1 else ''}"
        f"{' --out ' + str(args.out) if args.out else ''}`; do not edit by hand. -->"), "",
        (f"Every order at the run's {cfg.training.total_steps} steps, equal phase fractions, every tool at the "
        f"prior's strength; task seeds {args.task_seeds} x episode seeds {args.seeds} ({n_pairs} runs per "
        f"order, {wall / 60:.1f} min in all{f' over {jobs} processes' if jobs > 1 else ''}). `grpo` rewards the "
        "right sum (`first-number`). `-> merge ->`: the "
        "first tool's adapter is folded into the base at its phase's end, and the second tool's reference (DPO's "
        "reference, GRPO's KL) is the merged model (docs/merge.md)."
        + (f" Each learned controller (`{'`, `'.join(map(str, args.controller))}`, trained on {trained_on} with grpo "
           f"and merges in its action space) acts closed loop, choosing shares and merges phase by phase; together "
           f"they merged {sum(merges)} adapters in {len(merges)} runs ({sum(m > 0 for m in merges)} runs with a "
           "merge)." if learned else "")), "",
        "## Score parts (mean ± std over the runs)", "",
    ]
    table = [["order", *PARTS, "gain over base"]]
    for name, rs in rows.items():
        table.append([name, *(mean_std([r["scores"][p] for r in rs]) for p in PARTS),
                      mean_std([r["scores"]["composite"] - r["base"]["composite"] for r in rs], signed=True)])
    lines += [render_table(table, fmt="markdown"), ""]
    lines += [f"## Composite against `{REFERENCE}`, paired by (task, episode seed)", "",
              "95% t interval over the pairs; `beyond noise` when it excludes 0.", ""]
    ref = {(r["task"], r["seed"]): r["scores"]["composite"] for r in rows[REFERENCE]}
    table = [["order", "mean difference", "95% interval", "higher on", "verdict"]]
    for name, rs in rows.items():
        if name == REFERENCE:
            continue
        diffs = [r["scores"]["composite"] - ref[r["task"], r["seed"]] for r in rs]
        m, half = t_interval(diffs)
        verdict = "beyond noise" if abs(m) > half else "within noise"
        table.append([name, f"{m:+.3f}", f"[{m - half:+.3f}, {m + half:+.3f}]",
                      f"{sum(d > 0 for d in diffs)}/{len(diffs)}", verdict])
    lines += [render_table(table, fmt="markdown"), ""]
    pairs = sorted({k for rs in rows.values() for r in rs for k in r["cos"]})
    lines += ["## Interference after the last phase", "",
              ("Gradient cosine of two tools' base-weight gradients on 8 fixed rows (mean over layer groups, then "
              "over runs): negative, the tools pull the shared weights apart."), ""]
    table = [["order", *pairs]]
    for name, rs in rows.items():
        table.append([name, *(mean_std([r["cos"][k] for r in rs], signed=True) for k in pairs)])
    lines += [render_table(table, fmt="markdown"), ""]
    lines += ["## Where the held-out behaviours sit", "",
              ("Share of the output's held-out gain over the base already readable one layer below the output "
              "(logit lens, `metactl inspect`'s readout); mean over the runs that gained (n), `-` when none did."),
              ""]
    table = [["order", "heldout/style", "heldout/truth"]]
    for name, rs in rows.items():
        cells = []
        for key in HELD_OUT:
            vals = [r["below"][key] for r in rs if r["below"][key] is not None]
            cells.append(f"{statistics.mean(vals):.2f} (n={len(vals)})" if vals else "-")
        table.append([name, *cells])
    lines += [render_table(table, fmt="markdown"), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
