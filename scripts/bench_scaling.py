"""What scaling out costs and buys on this machine; every comparison is measured side by side in one run.

    python scripts/bench_scaling.py                       # prints a report
    python scripts/bench_scaling.py --out docs/bench_scaling.md

Sections:

1. **Per-step overhead** of each VecEnv engine (Dummy, SubprocVecEnv, RayVecEnv), on an env whose
   step costs microseconds (CartPole), so what is measured is the engine's own round trip.
2. **Controller throughput** on the real phase env (``metactl/Adaptation-v0``, the default
   ``train-controller`` episode: proxy-tiny, 96 steps, 4 phases): episodes/min with 2 workers
   under each engine, and Ray with 1, 2 and 3 workers (what one more worker buys on 2 cores).
3. **Ray's fixed costs**: ``ray.init`` of a local instance, and Ray's installed size.
4. **Data-parallel transfer** (accelerate DDP): one transfer run (expert schedule, one task) in 1
   process and in 2 processes (``torchrun``), with the scores' largest difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _cartpole():
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    return Monitor(gym.make("CartPole-v1"))


def _venv(kind: str, fns: list):
    from metactl.envs.config import RayConfig
    from metactl.envs.vector import vectorise

    # More workers than cores share them (Ray would otherwise refuse the third actor on 2 cores).
    cpus = min(1.0, (os.cpu_count() or 1) / len(fns))
    return vectorise(fns, kind, RayConfig(cpus_per_env=cpus))


def step_overhead(kinds: list[str], steps: int) -> dict[str, float]:
    """Milliseconds per VecEnv step (2 envs) on CartPole, whose own step is ~10 us."""
    out = {}
    for kind in kinds:
        venv = _venv(kind, [_cartpole, _cartpole])
        try:
            venv.seed(0)
            venv.reset()
            actions = np.zeros(2, dtype=np.int64)
            for _ in range(50):  # warm up (first calls import and allocate)
                venv.step(actions)
            t = time.perf_counter()
            for _ in range(steps):
                venv.step(actions)
            out[kind] = 1000 * (time.perf_counter() - t) / steps
        finally:
            venv.close()
        print(f"overhead {kind}: {out[kind]:.3f} ms/step", flush=True)
    return out


def throughput(kind: str, n_envs: int, episodes: int, overrides: list[str]) -> dict:
    """Episodes/min of the default controller episode with ``n_envs`` workers under ``kind``."""
    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.vector import make_env
    from metactl.policies.config import load_controller_config

    cfg = load_controller_config(REPO / "configs" / "train" / "default.yaml", overrides)
    fns = [partial(make_env, PHASE_ENV_ID, cfg.run, cfg.env, i) for i in range(n_envs)]
    t0 = time.perf_counter()
    venv = _venv(kind, fns)
    try:
        venv.seed(0)
        venv.reset()
        built = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        done_eps, steps, step_s = 0, 0, []
        t = time.perf_counter()
        while done_eps < episodes:
            actions = rng.uniform(-0.2, 0.2, (n_envs, *venv.action_space.shape)).astype(np.float32)
            s = time.perf_counter()
            _, _, dones, _ = venv.step(actions)
            step_s.append(time.perf_counter() - s)
            steps += 1
            done_eps += int(dones.sum())
        wall = time.perf_counter() - t
    finally:
        venv.close()
    row = {"engine": kind, "workers": n_envs, "episodes": done_eps, "seconds": wall, "build_s": built,
           "episodes_per_min": 60 * done_eps / wall, "step_s": statistics.median(step_s)}
    print(
        f"throughput {kind} x{n_envs}: {row['episodes_per_min']:.2f} episodes/min "
        f"({done_eps} episodes in {wall:.1f}s, median VecEnv step {row['step_s']:.2f}s, start {built:.1f}s)",
        flush=True,
    )
    return row


def ray_init_seconds(reps: int) -> list[float]:
    import ray

    out = []
    for _ in range(reps):
        t = time.perf_counter()
        ray.init(address="local", include_dashboard=False, configure_logging=False)
        ray.get(ray.put(1))
        out.append(time.perf_counter() - t)
        ray.shutdown()
    print(f"ray.init: {', '.join(f'{s:.1f}' for s in out)} s", flush=True)
    return out


def installed_mb(package: str) -> float:
    import importlib.util

    root = Path(importlib.util.find_spec(package).origin).parent
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def transfer_runs(steps: int, model: str, work: Path) -> dict:
    """One transfer (expert schedule, task 1000) in 1 and in 2 processes: wall time and score agreement."""
    out = {}
    for procs in (1, 2):
        cmd = [
            "-m",
            "metactl",
            "transfer",
            str(REPO / "configs" / "schedules" / "expert.yaml"),
            "--model",
            model,
            "--steps",
            str(steps),
            "--task-seed",
            "1000",
            "--out",
            str(work / f"p{procs}"),
            "--quiet",
        ]
        if procs > 1:
            cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *cmd]
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, *cmd], check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        wall = time.perf_counter() - t
        rows = [json.loads(x) for x in (work / f"p{procs}" / "results.jsonl").read_text().splitlines()]
        out[procs] = {
            "wall": wall,
            "run_s": {r["label"]: r["seconds"] for r in rows},
            "scores": {r["label"]: r["scores"] for r in rows},
        }
        print(
            f"transfer {model} {steps} steps, {procs} process(es): {wall:.1f}s wall, per run {out[procs]['run_s']}",
            flush=True,
        )
    diff = max(
        abs(out[1]["scores"][lb][k] - out[2]["scores"][lb][k]) for lb in out[1]["scores"] for k in out[1]["scores"][lb]
    )
    return {"runs": out, "max_score_diff": diff}


def report(res: dict) -> str:
    o = res["overhead"]
    lines = [
        "# Scaling out: what each engine costs and buys",
        "",
        (
            f"Made by `python scripts/bench_scaling.py --out docs/bench_scaling.md` in {res['seconds']:.0f} s "
            f"on this machine ({os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}, "
            f"ray {res['ray_version']}, torch CPU). Every figure below comes from this one run."
        ),
        "",
        "## Per-step overhead of the VecEnv engine (2 envs, CartPole: the env itself costs ~10 us)",
        "",
        "| engine | ms per VecEnv step | vs DummyVecEnv |",
        "|---|---|---|",
        *[f"| {k} | {v:.3f} | +{v - o['dummy']:.3f} ms |" for k, v in o.items()],
        "",
        (
            f"A Ray round trip adds {o['ray'] - o['dummy']:.1f} ms per step "
            f"({o['ray'] - o['subproc']:.1f} ms more than SubprocVecEnv's pipes). "
            f"A phase-env step trains for a phase: {res['phase_step_s']:.2f} s here, so Ray's share is "
            f"{100 * (o['ray'] - o['dummy']) / 1000 / res['phase_step_s']:.2f} %."
        ),
        "",
        "## Controller throughput on the phase env (default train-controller episode)",
        "",
        "| engine | workers | episodes/min | median VecEnv step (s) | start-up (s) |",
        "|---|---|---|---|---|",
        *[
            f"| {r['engine']} | {r['workers']} | {r['episodes_per_min']:.2f} | {r['step_s']:.2f} | {r['build_s']:.1f} |"
            for r in res["throughput"]
        ],
        "",
        res["per_worker"],
        "",
        "## Ray's fixed costs",
        "",
        (
            "- `ray.init()` of a local instance (and a first object round trip): "
            f"{', '.join(f'{s:.1f}' for s in res['ray_init'])} s."
        ),
        (
            f"- Installed size: `ray` {res['ray_mb']:.0f} MB "
            f"(core; `ray[tune]` adds pandas and pyarrow, {res['tune_mb']:.0f} MB more)."
        ),
        "",
        "## Data-parallel transfer (accelerate DDP, `torchrun --nproc_per_node 2`)",
        "",
    ]
    for model, t in res["transfer"].items():
        r1, r2 = t["runs"][1], t["runs"][2]
        lines += [
            f"`{model}`, expert schedule and default, {res['transfer_steps'][model]} steps, task 1000:",
            "",
            "| processes | wall (s, with start-up) | expert run (s) | default run (s) |",
            "|---|---|---|---|",
            f"| 1 | {r1['wall']:.1f} | {r1['run_s']['learned']:.1f} | {r1['run_s']['default']:.1f} |",
            f"| 2 | {r2['wall']:.1f} | {r2['run_s']['learned']:.1f} | {r2['run_s']['default']:.1f} |",
            "",
            f"Largest score difference between the 1- and 2-process runs: {t['max_score_diff']:.1e}.",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overhead-steps", type=int, default=2000)
    ap.add_argument("--episodes", type=int, default=8, help="phase-env episodes per throughput case")
    ap.add_argument("--transfer-models", nargs="*", default=["proxy-tiny", "proxy-large"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    t0 = time.perf_counter()
    res: dict = {"ray_version": ray.__version__}
    res["overhead"] = step_overhead(["dummy", "subproc", "ray"], args.overhead_steps)
    res["throughput"] = [throughput(k, 2, args.episodes, []) for k in ("dummy", "subproc", "ray")]
    res["throughput"] += [throughput("ray", n, args.episodes, []) for n in (1, 3)]
    # One env, one phase per VecEnv step: the time a phase takes.
    res["phase_step_s"] = next(r["step_s"] for r in res["throughput"] if r["engine"] == "ray" and r["workers"] == 1)
    ray_rows = {r["workers"]: r["episodes_per_min"] for r in res["throughput"] if r["engine"] == "ray"}
    res["per_worker"] = (
        f"With Ray, 1 -> 2 workers takes throughput from {ray_rows[1]:.2f} to {ray_rows[2]:.2f} episodes/min "
        f"({ray_rows[2] / ray_rows[1]:.2f}x); a 3rd worker on these 2 cores gives {ray_rows[3]:.2f} "
        f"({ray_rows[3] / ray_rows[2]:.2f}x of 2). Each worker is one episode stream at one core: "
        "expect one worker's rate per added core, on this node or "
        "another, until the PPO update on the driver (milliseconds per 8 episodes) or Ray's few ms per step matter; "
        "more workers than cores only share them."
    )
    res["ray_init"] = ray_init_seconds(3)
    res["ray_mb"] = installed_mb("ray")
    res["tune_mb"] = installed_mb("pandas") + installed_mb("pyarrow")
    res["transfer"], res["transfer_steps"] = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for model in args.transfer_models:
            steps = 96
            res["transfer_steps"][model] = steps
            res["transfer"][model] = transfer_runs(steps, model, Path(work) / model)
    res["seconds"] = time.perf_counter() - t0
    text = report(res)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n<!-- raw -->\n```json\n" + json.dumps(res, indent=1, default=str) + "\n```\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
