"""Benchmark the runner's inner loop on proxy-tiny; every ratio is measured side by side in one run.

    python scripts/bench_runner.py                  # prints a report
    python scripts/bench_runner.py --out docs/bench_runner.md

Reports: train steps/s per tool; achieved FLOP/s (counted with torch's FlopCounterMode) as a
fraction of a large fp32 matmul's FLOP/s measured in the same process; the two speed levers
(cached DPO reference vs recomputed per step; backprop stopping at the lowest trained layer vs
training every layer); one scoring pass; and seconds per episode and episodes/min for the default
and expert schedules at the controller's episode size, with one and with two 1-thread processes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
from pathlib import Path

import torch

SCHEDULES = ("default", "expert")


def matmul_flops(n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def _engine(overrides: list[str]):
    from metactl.config import load_config
    from metactl.runner import Engine

    return Engine(load_config(None, overrides), progress=False)


def _steps(engine, tool: str, train_groups: list[float], n: int, recompute_ref: bool = False) -> float:
    """Seconds per optimiser step of ``tool`` (``recompute_ref`` re-does the DPO reference pass)."""
    from metactl.forward import completion_logprobs

    ep = engine.episode(0)
    engine.adapters.trainable(tool, [train_groups, train_groups])
    t = engine.task.tools[tool]
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = t.sample(gen)
        if recompute_ref:
            with torch.no_grad(), engine.model.disable_adapter():
                both = torch.cat([idx, idx + len(t.rows)])
                completion_logprobs(engine.model, t.data.select(both))
        loss = t.loss(engine.model, idx)
        loss.backward()
        ep.optimizer.step()
        ep.optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    engine.adapters.freeze()
    return (time.perf_counter() - start) / n


def _step_flops(engine, tool: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    engine.adapters.trainable(tool, [[1.0] * 4, [1.0] * 4])
    t = engine.task.tools[tool]
    with FlopCounterMode(display=False) as fc:
        t.loss(engine.model, t.sample(torch.Generator().manual_seed(0))).backward()
    engine.model.zero_grad(set_to_none=True)
    engine.adapters.freeze()
    return fc.get_total_flops()


def _episodes_worker(args: tuple[list[str], str, int, int]) -> tuple[float, int]:
    overrides, schedule, episodes, seed = args
    torch.set_num_threads(1)
    from metactl.schedule import Schedule

    engine = _engine(overrides)
    sched = Schedule.named(schedule)
    engine.run(sched, seed=seed)  # warm-up
    start = time.perf_counter()
    for e in range(episodes):
        engine.run(sched, seed=seed + e)
    return time.perf_counter() - start, episodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="episode size (default: the run config's total_steps)")
    ap.add_argument("--episodes", type=int, default=3, help="timed episodes per schedule and process")
    ap.add_argument("--reps", type=int, default=20, help="timed optimiser steps per measurement")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    overrides = [f"training.total_steps={args.steps}"] if args.steps else []
    engine = _engine(overrides)
    cfg = engine.config
    lines = [
        (
            f"# Runner benchmark (proxy-tiny, {platform.processor() or platform.machine()}, "
            f"torch {torch.__version__}, 1 thread per process)"
        ),
        "",
    ]

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    peak = matmul_flops()
    out(f"fp32 matmul 1024^3, 1 thread: {peak / 1e9:.1f} GFLOP/s")
    out("")
    out("| tool | batch | ms/step | steps/s | GFLOP/step | GFLOP/s | fraction of matmul |")
    out("|---|---|---|---|---|---|---|")
    for tool in engine.tool_names:
        sec = _steps(engine, tool, [1.0] * 4, args.reps)
        fl = _step_flops(engine, tool)
        out(
            f"| {tool} | {cfg.tools[tool].batch_size} | {sec * 1e3:.1f} | {1 / sec:.1f} | {fl / 1e9:.3f} | "
            f"{fl / sec / 1e9:.1f} | {fl / sec / peak:.2f} |"
        )
    out("")
    out("Speed levers, side by side:")
    cached = _steps(engine, "dpo", [1.0] * 4, args.reps)
    recomputed = _steps(engine, "dpo", [1.0] * 4, args.reps, recompute_ref=True)
    out(
        f"- DPO reference log-probs cached once: {cached * 1e3:.1f} ms/step vs recomputed every step "
        f"{recomputed * 1e3:.1f} ms/step ({recomputed / cached:.2f}x)"
    )
    full = _steps(engine, "sft", [1.0] * 4, args.reps)
    top = _steps(engine, "sft", [0.0, 0.0, 0.0, 1.0], args.reps)
    out(
        f"- SFT training every layer group: {full * 1e3:.1f} ms/step vs top group only (backprop stops there) "
        f"{top * 1e3:.1f} ms/step ({full / top:.2f}x)"
    )
    engine.adapters.activate(engine.tool_names)
    all_on = _steps(engine, "sft", [1.0] * 4, args.reps)
    engine.adapters.activate(["sft"])
    one_on = _steps(engine, "sft", [1.0] * 4, args.reps)
    engine.adapters.activate(engine.tool_names)
    out(
        f"- SFT step with all {len(engine.tool_names)} adapters in the forward: {all_on * 1e3:.1f} ms/step "
        f"vs untrained adapters skipped {one_on * 1e3:.1f} ms/step ({all_on / one_on:.2f}x)"
    )
    t = time.perf_counter()
    for _ in range(3):
        engine.task.scorer.score(engine.model)
    score_s = (time.perf_counter() - t) / 3
    out(
        f"- one scoring pass ({len(engine.task.scorer.probes)} probe sequences + "
        f"{len(engine.task.scorer.retain)} retain texts): {score_s:.2f} s"
    )
    quick = engine.task.observe_scorer(16)
    t = time.perf_counter()
    for _ in range(3):
        quick.score(engine.model)
    quick_s = (time.perf_counter() - t) / 3
    out(
        f"- observe-split scoring pass the phase env reads between phases (16 probes per behaviour, "
        f"env.quick_probes): "
        f"{quick_s:.2f} s ({score_s / quick_s:.1f}x cheaper than the full pass)"
    )
    from metactl.interference import gradient_cosines

    t = time.perf_counter()
    for _ in range(3):
        gradient_cosines(engine, 8)
    out(
        f"- interference reading (each tool's gradient on the base weights, 8 rows, cosines per group): "
        f"{(time.perf_counter() - t) / 3:.2f} s"
    )
    out("")
    out(f"Episodes ({cfg.training.total_steps} steps, score after every phase: {cfg.training.score_every_phase}):")
    out("")
    out("| schedule | phases | s/episode (1 proc) | episodes/min (1 proc) | episodes/min (2 procs) |")
    out("|---|---|---|---|---|")
    from metactl.schedule import Schedule

    ctx = mp.get_context("spawn")
    for name in SCHEDULES:
        n_phases = len(Schedule.named(name).phases)
        secs, n = _episodes_worker((overrides, name, args.episodes, 0))
        with ctx.Pool(2) as pool:
            t = time.perf_counter()
            res = pool.map(
                _episodes_worker, [(overrides, name, args.episodes, 100), (overrides, name, args.episodes, 200)]
            )
            wall_two = max(s for s, _ in res)
        eps2 = sum(n for _, n in res) / wall_two * 60
        out(f"| {name} | {n_phases} | {secs / n:.2f} | {n / secs * 60:.1f} | {eps2:.1f} |")
    out("")
    out("Target: >= 60 episodes/min on 2 cores.")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python scripts/bench_runner.py" + (f" --steps {args.steps}" if args.steps else "")
        args.out.write_text("\n".join(lines[:1] + ["", f"Made by `{cmd}`.", ""] + lines[1:]) + "\n")


if __name__ == "__main__":
    main()
