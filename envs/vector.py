"""The vectorised env a controller learns on: the same env factory behind every ``VecEnv`` kind.

``vec_env`` picks the engine that runs the envs:

- ``dummy``: all envs in this process, one after another (debugging, one env);
- ``subproc``: one local process per env (SB3's ``SubprocVecEnv``; the default for several envs);
- ``ray``: one Ray actor per env, on this machine or a cluster (:class:`metactl.envs.ray_vec_env.RayVecEnv`);
- ``batched``: the phase env's episodes batched on population engines, one per process
  (:mod:`metactl.envs.batched`, :mod:`metactl.envs.sharded`).

Every kind builds its envs with :func:`make_env`, an importable function (Ray and forkserver
workers import it by name), so the same seeds give the same episodes whichever runs them.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING

import gymnasium as gym

from metactl.errors import DivergedRun

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from metactl.config import RunConfig
    from metactl.envs.config import EnvConfig
    from metactl.envs.jobs import Job
    from metactl.envs.ray_vec_env import RayConfig

VEC_ENVS = ("auto", "dummy", "subproc", "ray", "batched")


def make_env(env_id: str, run: RunConfig, env: EnvConfig, worker_index: int = 0, monitor: bool = True) -> gym.Env:
    """One metactl env, Monitor-wrapped as ``make_vec_env`` does (unless a ``VecMonitor`` will
    count episodes instead), knowing its worker index.

    The index lives in the env, not in the VecEnv, so a restarted worker still runs its share of
    the evaluation jobs.
    """
    from stable_baselines3.common.monitor import Monitor

    from metactl.envs import make

    inner = make(env_id, run=run, env=env)
    inner.set_worker_index(worker_index)
    return Monitor(inner) if monitor else inner


def make_venv(env_id: str, run: RunConfig, env: EnvConfig, n_envs: int, vec_env: str = "auto",
              ray: RayConfig | None = None, processes: int = 1) -> VecEnv:
    """``n_envs`` metactl envs under the chosen engine (``processes``: how many processes
    ``batched`` splits them over)."""
    if vec_env == "batched":
        return batched_venv(env_id, run, env, n_envs, processes)
    fns = [partial(make_env, env_id, run, env, i) for i in range(n_envs)]
    return vectorise(fns, vec_env, ray)


def batched_venv(env_id: str, run: RunConfig, env: EnvConfig, n_envs: int, processes: int = 1) -> VecEnv:
    """The phase env's ``n_envs`` episodes on population engines: one in this process
    (:mod:`metactl.envs.batched`), or one per process for ``processes`` > 1 (:mod:`metactl.envs.sharded`)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.batched import BatchedVecEnv
    from metactl.errors import ConfigError

    if env_id != PHASE_ENV_ID:
        raise ConfigError(
            f"vec_env: 'batched' runs {PHASE_ENV_ID} (policy ppo) only, not {env_id}; use vec_env: subproc for it."
        )
    if min(processes, n_envs) > 1:
        from metactl.envs.sharded import ShardedVecEnv

        return VecMonitor(ShardedVecEnv(run, env, n_envs, processes))
    return VecMonitor(BatchedVecEnv(run, env, n_envs))


def vectorise(fns: list, vec_env: str = "auto", ray: RayConfig | None = None) -> VecEnv:
    """Env factories -> the chosen ``VecEnv`` (``auto``: ``subproc`` for several, ``dummy`` for one)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from metactl.errors import check_choice

    check_choice("vec_env", vec_env, VEC_ENVS)
    if vec_env == "batched":
        raise ValueError("vec_env 'batched' is built from the env's config (make_venv), not from env factories")

    kind = ("subproc" if len(fns) > 1 else "dummy") if vec_env == "auto" else vec_env
    if kind == "ray":
        from metactl.envs.ray_vec_env import RayVecEnv

        return RayVecEnv(fns, ray)
    if kind == "subproc":
        from metactl.workers import watched_by

        # Each env factory runs in its worker, which it also makes exit once this process is gone.
        return SubprocVecEnv([partial(watched_by, os.getpid(), fn) for fn in fns])
    return DummyVecEnv(fns)


def run_jobs(venv: VecEnv, jobs: list[Job]) -> list[dict]:
    """Run evaluation jobs spread over the VecEnv's workers (in parallel for SubprocVecEnv); one row
    per job, in job order. A job that diverged keeps its row, with ``diverged`` set and no scores."""
    from metactl.envs.jobs import write_adapter_files

    n = venv.num_envs
    # Dealt round robin, actors (which read observations between phases) first: every worker, and
    # so every process of a batched run, gets its even share of each kind, and a batched process
    # packs each kind into full passes (BatchedVecEnv.run_jobs).
    order = sorted(range(len(jobs)), key=lambda j: jobs[j].schedule is not None)
    by_worker: dict[int, list[Job]] = {i: [jobs[j] for j in order[i::n]] for i in range(n)}
    per_worker = venv.env_method("run_jobs", by_worker)
    out: list[dict] = [{}] * len(jobs)
    for i, results in enumerate(per_worker):
        for k, res in enumerate(results):
            out[order[i + k * n]] = res
    for job, res in zip(jobs, out):
        files = res.pop("adapter_files", None)
        if job.save_adapters and files:
            write_adapter_files(job.save_adapters, files)
    return out


def finished(rows: list[dict], what: str) -> list[dict]:
    """The rows of jobs that did not diverge, for a caller that needs their schedules (``what`` it
    makes of them); every job diverged: :class:`DivergedRun` with the first message."""
    from metactl.evaluation import finished_rows

    ok = finished_rows(rows)
    if not ok:
        raise DivergedRun.from_message(f"{rows[0]['diverged']} (so {what} could not be made)")
    return ok
