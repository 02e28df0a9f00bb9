"""Benchmark the runner's inner loop on proxy-tiny; every ratio is measured side by side in one run.

    python scripts/bench_runner.py                  # prints a report
    python scripts/bench_runner.py --out docs/bench_runner.md
    python scripts/bench_runner.py --quick          # only the controller-episode comparison (< 5 min)

Reports: train steps/s per tool; achieved FLOP/s (counted with torch's FlopCounterMode) as a
fraction of a large fp32 matmul's FLOP/s measured in the same process; the two speed levers
(cached DPO reference vs recomputed per step; backprop stopping at the lowest trained layer vs
training every layer); one scoring pass; and seconds per episode and episodes/min for the default
and expert schedules at the controller's episode size, with one and with two 1-thread processes.

Then the default controller episode (the phase env of ``metactl train-controller``'s default
config, actions drawn as its initial PPO policy draws them) under ``vec_env: subproc`` (two
1-thread processes, one episode each) and ``vec_env: batched`` (K episodes on population
engines: two 1-thread processes with K/2 each, and one 2-thread process with all K) for several
K, each in a fresh process: episodes/min, peak memory per episode, and the batched train step's
fraction of the fp32 matmul rate. The last line is
``episodes/min: batched N1 (K=k), subprocess N2, ratio R``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import time
from pathlib import Path

import torch

from metactl.rundir import atomic_write_text

SCHEDULES = ("default", "expert")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_flops(n: int = 1024, reps: int = 10, device: str = "cpu") -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
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


def tool_steps(out, reps: int) -> None:
    """ms per optimiser step of every registered tool on one engine, each tool's batch as its config
    sets it (grpo's cost is the same whatever its samples earn: it samples, scores and backpropagates
    every step)."""
    from metactl.tools import TOOLS

    engine = _engine([f"tools.{t}={{}}" for t in TOOLS])
    cfg = engine.config
    peak = matmul_flops()
    out(f"fp32 matmul 1024^3, 1 thread: {peak / 1e9:.1f} GFLOP/s")
    out("")
    out("| tool | rows per step | ms/step | steps/s | GFLOP/step | fraction of matmul |")
    out("|---|---|---|---|---|---|")
    for tool in engine.tool_names:
        c = cfg.tools[tool]
        group = getattr(c, "group_size", None)
        rows = f"{c.batch_size} prompts x {group} samples" if group else str(c.batch_size)
        sec = _steps(engine, tool, [1.0] * 4, reps)
        fl = _step_flops(engine, tool)
        out(f"| {tool} | {rows} | {sec * 1e3:.1f} | {1 / sec:.1f} | {fl / 1e9:.3f} | {fl / sec / peak:.2f} |")
    out("")
    out("grpo's step includes sampling its completions token by token (no KV cache: proxy completions are a few "
        "characters) and the base's log-probs of them for the KL term.")
    sec = _merge_seconds(engine, reps)
    sft = _steps(engine, "sft", [1.0] * 4, reps)
    out("")
    out(f"A schedule `merge` of sft (fold its adapter into the base, restart it, recompute the references the tools "
        f"cache: DPO's reference log-probs and the retain KL's): {sec * 1e3:.1f} ms, the time of "
        f"{sec / sft:.1f} sft steps.")


def _merge_seconds(engine, reps: int) -> float:
    """Seconds per merge of the sft adapter (the references recomputed with it); the base restored after."""
    ep = engine.episode(0)
    start = time.perf_counter()
    for _ in range(reps):
        ep.merge(["sft"])
    sec = (time.perf_counter() - start) / reps
    engine.restore_base()
    return sec


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


def _controller_episodes(args: tuple[str, int, int, int, int, str]) -> tuple[float, float, float]:
    """Episodes/min, peak RSS (MiB, the largest process) and peak GPU memory (MiB, 0 on a CPU) of
    ``rounds`` rounds of the default controller episode on ``n_envs`` envs under ``vec_env``, batched
    over ``processes`` processes, on ``device`` (run in a fresh process; the first round is a warm-up)."""
    import resource

    import numpy as np

    from metactl.commands.train_controller.config import resolve
    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.vector import make_venv

    vec_env, n_envs, threads, rounds, processes, device = args
    cfg, _ = resolve("default", [f"run.training.threads={threads}", f"run.training.device={device}"])
    torch.set_num_threads(threads)
    venv = make_venv(PHASE_ENV_ID, cfg.run, cfg.env, n_envs, vec_env, processes=processes)
    venv.seed(0)
    rng = np.random.default_rng(0)
    std = float(np.exp(cfg.ppo.log_std_init))
    shape = (n_envs, *venv.action_space.shape)

    def one_round() -> None:
        venv.reset()
        done = np.zeros(n_envs, dtype=bool)
        while not done.all():
            _, _, d, _ = venv.step(np.clip(rng.normal(0, std, shape), -1, 1).astype(np.float32))
            done |= d

    one_round()
    start = time.perf_counter()
    for _ in range(rounds):
        one_round()
    wall = time.perf_counter() - start  # step() hands back numpy arrays: the GPU's work is done by then
    venv.close()
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return n_envs * rounds / wall * 60, rss / 1024, gpu


def _send_result(conn, args: tuple[str, int, int, int, int, str]) -> None:
    conn.send(_controller_episodes(args))
    conn.close()


def _in_fresh_process(args: tuple[str, int, int, int, int, str]) -> tuple[float, float, float]:
    # A plain process, not a Pool worker: Pool workers are daemonic and SubprocVecEnv needs children.
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_send_result, args=(child, args))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def _batched_step_fraction(k: int, threads: int, peak: float, device: str = "cpu") -> float:
    """FLOP/s of one batched SFT step of K episodes in one process of ``threads`` threads, as a
    fraction of ``peak`` x threads (on a GPU: of ``peak``)."""
    from torch.utils.flop_counter import FlopCounterMode

    from metactl.commands.train_controller.config import resolve
    from metactl.population import Population
    from metactl.schedule import Schedule

    cfg, _ = resolve("default", [f"run.training.threads={threads}", f"run.training.device={device}"])
    torch.set_num_threads(threads)
    pop = Population(cfg.run, k)
    phase = Schedule.named("default", cfg.run.training.layer_groups).phases[0]
    for slot in range(k):
        pop.begin(slot, slot % 16, slot)
    step = {slot: (phase, 8) for slot in range(k)}
    pop.run_phases(step)  # warm-up (and every adapter trained, as in a real episode)
    with FlopCounterMode(display=False) as fc:
        pop.run_phases(step)
    _sync(device)
    start = time.perf_counter()
    pop.run_phases(step)
    _sync(device)
    scale = 1 if device.startswith("cuda") else threads
    return fc.get_total_flops() / (time.perf_counter() - start) / (peak * scale)


def _population_sft(k: int, threads: int, reps: int, profile: bool = False):
    """Seconds per batched SFT step of ``k`` episodes on ``threads`` threads (every tool in the
    forward, as in a phase that runs them all); with ``profile``, also the torch profiler's self
    CPU time per op over those steps."""
    from metactl.commands.train_controller.config import resolve
    from metactl.population import Population
    from metactl.schedule import Schedule

    cfg, _ = resolve("default", [f"run.training.threads={threads}"])
    torch.set_num_threads(threads)
    pop = Population(cfg.run, k)
    phase = Schedule.named("default", cfg.run.training.layer_groups).phases[0]
    for slot in range(k):
        pop.begin(slot, 0, slot)
        pop.slots[slot].active = list(pop.tool_names)
    train = {slot: phase for slot in range(k)}
    slots = list(range(k))
    pop.model.train()
    for _ in range(2):
        pop._train_step("sft", slots, train)
    ops: dict[str, float] = {}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                pop._train_step("sft", slots, train)
        ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    start = time.perf_counter()
    for _ in range(reps):
        pop._train_step("sft", slots, train)
    return (time.perf_counter() - start) / reps, ops


def _in_pool(fn, *args):
    # A fresh process per measurement: torch's thread count is set once per process.
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def batched_breakdown(out, engine_sft: float, reps: int) -> None:
    """Where a batched step's time goes, and why one 1-thread process per core."""
    one, ops = _in_pool(_population_sft, 4, 1, reps, True)
    k1, _ = _in_pool(_population_sft, 1, 1, reps)
    two, _ = _in_pool(_population_sft, 4, 2, reps)
    total = sum(ops.values())

    def share(*names: str) -> float:
        return sum(v for key, v in ops.items() if any(n in key for n in names)) / total

    groups = {
        "base matmuls (aten::mm)": share("aten::mm"),
        "LoRA products (bmm, baddbmm)": share("aten::bmm", "aten::baddbmm"),
        "attention (scaled_dot_product)": share("scaled_dot_product"),
        "elementwise (mul, add, copy, cat, silu, pow, ...)": 0.0,
    }
    groups["elementwise (mul, add, copy, cat, silu, pow, ...)"] = 1 - sum(groups.values())
    out("Where a batched SFT step's time goes (4 episodes, 1 thread, every tool in the forward; torch profiler, "
        "self CPU time):")
    out("")
    out("| part | share of the step |")
    out("|---|---|")
    for name, frac in groups.items():
        out(f"| {name} | {frac:.2f} |")
    out("")
    out(f"- SFT episode-step, 1 thread: {engine_sft * 1e3:.1f} ms through peft (Engine), {k1 * 1e3:.1f} ms on the "
        f"population engine at K=1, {one / 4 * 1e3:.1f} ms per episode at K=4")
    out(f"- K=4 on 2 threads: {two / 4 * 1e3:.1f} ms per episode, {2 * two / one:.2f}x the CPU time of 1 thread "
        "(hence one 1-thread process per core)")
    out("")


def controller_comparison(out, peak: float, setups: list[tuple[int, int, int]], rounds: int, sub_rounds: int) -> None:
    """Subprocesses against ``vec_env: batched`` at each (K, processes, threads) of ``setups``."""
    out("Default controller episode (the phase env of train-controller's default config), episodes/min:")
    out("")
    out("| vec_env | processes x threads | K (episodes in one batch, all processes) | episodes/min | "
        "peak memory per episode |")
    out("|---|---|---|---|---|")
    sub, sub_rss, _ = _in_fresh_process(("subproc", 2, 1, sub_rounds, 1, "cpu"))
    out(f"| subproc | 2 x 1 | 1 per process | {sub:.1f} | {sub_rss:.0f} MiB (largest process) |")
    best = (0.0, 0, 0, 0)
    for k, procs, threads in setups:
        eps, rss, _ = _in_fresh_process(("batched", k, threads, rounds, procs, "cpu"))
        out(f"| batched | {procs} x {threads} | {k} | {eps:.1f} | {rss / (k / procs):.0f} MiB |")
        best = max(best, (eps, k, procs, threads))
    eps, k, procs, threads = best
    frac = _batched_step_fraction(k // procs, threads, peak)
    out("")
    out(f"A batched SFT step of {k // procs} episodes in one {threads}-thread process runs at {frac:.2f} of that "
        f"process's fp32 matmul rate ({threads} x {peak / 1e9:.1f} GFLOP/s).")
    out("")
    out(f"episodes/min: batched {eps:.1f} (K={k}), subprocess {sub:.1f}, ratio {eps / sub:.2f}")


def gpu_comparison(out, ks: list[int], sub_rounds: int, device: str = "cuda") -> None:
    """``vec_env: batched`` on the GPU at each K of ``ks`` (one process), against subprocesses on 2
    CPU cores (the reference of the CPU figures) and on every core of the same machine."""
    import os

    import peft
    import transformers

    cores = os.cpu_count() or 1
    peak = matmul_flops(8192, 10, device)
    out(f"{torch.cuda.get_device_name()}, {cores} CPU cores; torch {torch.__version__}, transformers "
        f"{transformers.__version__}, peft {peft.__version__}. fp32 matmul 8192^3 on the GPU: "
        f"{peak / 1e12:.1f} TFLOP/s (TF32 off, torch's default).")
    out("")
    out("Default controller episode (the phase env of train-controller's default config), episodes/min:")
    out("")
    out("| vec_env | device | processes x threads | K (episodes in one batch) | episodes/min | "
        "peak memory per episode |")
    out("|---|---|---|---|---|---|")
    subs = {}
    for procs in (2, cores):
        subs[procs], rss, _ = _in_fresh_process(("subproc", procs, 1, sub_rounds, 1, "cpu"))
        out(f"| subproc | cpu | {procs} x 1 | 1 per process | {subs[procs]:.1f} | {rss:.0f} MiB (largest process) |")
    best = (0.0, 0)
    for k in ks:
        eps, _, gpu = _in_fresh_process(("batched", k, 1, 2 if k <= 32 else 1, 1, device))
        out(f"| batched | {device} | 1 x 1 | {k} | {eps:.1f} | {gpu / k:.1f} MiB GPU |")
        best = max(best, (eps, k))
    eps, k = best
    frac = _batched_step_fraction(k, 1, peak, device)
    out("")
    out(f"A batched SFT step of {k} episodes runs at {frac:.4f} of the GPU's fp32 matmul rate.")
    out("")
    out(f"episodes/min: batched {eps:.1f} (K={k}, {device}), subprocess {subs[2]:.1f}, ratio {eps / subs[2]:.2f}; "
        f"against {cores} CPU processes ({subs[cores]:.1f}): ratio {eps / subs[cores]:.2f}")


def _printer(lines: list[str]):
    """Print a report line and keep it for the --out file."""

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="episode size (default: the run config's total_steps)")
    ap.add_argument("--episodes", type=int, default=3, help="timed episodes per schedule and process")
    ap.add_argument("--reps", type=int, default=20, help="timed optimiser steps per measurement")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="only the controller-episode comparison (K=8 on 2 processes)")
    ap.add_argument("--tools", action="store_true", help="only the train step of every registered tool, grpo's "
                    "sampling included (grpo is opt-in in a run, so the full report leaves it out)")
    ap.add_argument("--device", default="cpu", help="cuda: the population engine on the GPU at K = --gpu-k, against "
                    "subprocesses on the same machine's CPU cores (writes its own report)")
    ap.add_argument("--gpu-k", default="1,8,32,64,128,256", help="K values of the --device cuda sweep")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.device != "cpu":
        lines = ["# Population engine on a GPU (proxy-tiny, default controller episode)", "",
                 f"Made by `python scripts/bench_runner.py --device {args.device}`.", ""]
        gpu_comparison(_printer(lines), [int(k) for k in args.gpu_k.split(",")], 2, args.device)
        if args.out:
            atomic_write_text(args.out, "\n".join(lines) + "\n")
        return
    if args.quick:
        quick = ["# Population engine vs subprocesses (proxy-tiny, default controller episode)", "",
                 "Made by `python scripts/bench_runner.py --quick`.", ""]
        say = _printer(quick)
        peak = matmul_flops()
        say(f"fp32 matmul 1024^3, 1 thread: {peak / 1e9:.1f} GFLOP/s")
        say("")
        controller_comparison(say, peak, [(8, 2, 1)], rounds=1, sub_rounds=2)
        if args.out:
            atomic_write_text(args.out, "\n".join(quick) + "\n")
        return
    if args.tools:
        lines = [f"# Train step per tool, every registered tool (proxy-tiny, torch {torch.__version__}, 1 thread)", "",
                 "Made by `python scripts/bench_runner.py --tools`.", ""]
        tool_steps(_printer(lines), args.reps)
        if args.out:
            atomic_write_text(args.out, "\n".join(lines) + "\n")
        return
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

    out = _printer(lines)
    peak = matmul_flops()
    out(f"fp32 matmul 1024^3, 1 thread: {peak / 1e9:.1f} GFLOP/s")
    out("")
    out("| tool | batch | ms/step | steps/s | GFLOP/step | GFLOP/s | fraction of matmul |")
    out("|---|---|---|---|---|---|---|")
    sft_step = 0.0
    for tool in engine.tool_names:
        sec = _steps(engine, tool, [1.0] * 4, args.reps)
        sft_step = sec if tool == "sft" else sft_step
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
    batched_breakdown(out, sft_step, args.reps)
    sweep = [(1, 1, 1), (2, 2, 1), (4, 2, 1), (8, 2, 1), (16, 2, 1), (32, 2, 1), (8, 1, 2)]
    controller_comparison(out, peak, sweep, rounds=1, sub_rounds=3)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python scripts/bench_runner.py" + (f" --steps {args.steps}" if args.steps else "")
        args.out.write_text("\n".join(lines[:1] + ["", f"Made by `{cmd}`.", ""] + lines[1:]) + "\n")


if __name__ == "__main__":
    main()
