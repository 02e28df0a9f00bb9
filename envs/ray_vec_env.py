"""An SB3 ``VecEnv`` whose environments are Ray actors, so env rollouts can use a whole cluster.

Every env step of ``metactl/Adaptation-v0`` trains a model for a phase (about half a second on the
proxy, minutes on a large model), so a controller's sample budget is set by how many envs step at
once. :class:`RayVecEnv` keeps SB3's learner on the driver and puts each env in its own Ray actor,
which may sit on any node of a cluster and may take a fraction of a GPU.

It behaves like ``SubprocVecEnv`` (same auto-reset, ``terminal_observation`` and
``TimeLimit.truncated`` conventions, same seeding), so the same seeds give the same observations
and rewards as ``DummyVecEnv``. What it adds is recovery: an actor whose process dies (OOM kill,
lost node, segfault) is restarted by Ray up to ``max_restarts`` times with task retries off, because
a phase is not repeatable on a fresh actor (the adapters it trained are gone). The interrupted
episode is reported as truncated at its last observation, with ``info["worker_restarted"] = True``,
and the new actor is reseeded deterministically from the VecEnv's seed, the env index and the
restart count.

No maintained SB3-on-Ray VecEnv exists (DLR-RM/stable-baselines3#1345 was never merged), hence
this small class. Env factories must be importable functions of an installed package (Ray
workers import them by name; a test module is not importable there), e.g. :func:`metactl.envs.vector.make_env`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from metactl.envs.config import RayConfig
from metactl.envs.ray_cluster import check_fits, init_ray, require_ray
from metactl.envs.ray_worker import EnvActor

__all__ = ["EnvActor", "RayVecEnv", "check_fits", "init_ray", "require_ray", "restart_seed"]

log = logging.getLogger("metactl.ray")


def stack_obs(obs: Sequence[Any], space: gym.Space) -> VecEnvObs:
    """One observation per env -> the batch SB3 expects (as ``SubprocVecEnv`` stacks them)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(np.stack([o[i] for o in obs]) for i in range(len(space.spaces)))
    return np.stack(obs)


def restart_seed(base: int, index: int, restarts: int) -> int:
    """The seed a restarted actor's first episode gets: a function of where it is, not of when."""
    return int(np.random.SeedSequence([base, index, restarts]).generate_state(1)[0])


class RayVecEnv(VecEnv):
    """``len(env_fns)`` environments, each in a Ray actor; the learner stays in this process.

    :param env_fns: importable, picklable callables that build one env each
    :param config: actor resources, restarts and where Ray runs (:class:`RayConfig`)
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], config: RayConfig | None = None) -> None:
        self.config = config or RayConfig()
        self._owns_ray = init_ray(self.config)
        import ray

        self._ray = ray
        self.env_fns = list(env_fns)
        self.actors: list[Any] = []
        self.closed = False
        self._started_ok = False
        try:
            check_fits(self.config, len(self.env_fns))
            remote = ray.remote(**self.config.actor_options())(EnvActor)
            self.actors = [remote.remote(fn) for fn in self.env_fns]
            spaces = self._started([a.spaces.remote() for a in self.actors])
            self._started_ok = True
        except BaseException:
            self.close()
            raise
        self.restarts = [0] * len(self.actors)  # in this process, held against ray.max_restarts as Ray does
        self.restarts_before = [0] * len(self.actors)  # in earlier processes of a resumed run (seeds only)
        self._seed_base = 0
        self._last_obs: list[Any] = [None] * len(self.actors)
        self._pending: list[Any] = []
        super().__init__(len(self.actors), *spaces[0])

    # -- the VecEnv API --------------------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        seeds = super().seed(seed)
        self._seed_base = int(seeds[0])
        return seeds

    def reset(self) -> VecEnvObs:
        refs = [a.reset.remote(self._seeds[i], self._options[i]) for i, a in enumerate(self.actors)]
        results = []
        for i, ref in enumerate(refs):
            try:
                results.append(self._get(ref))
            except self._ray.exceptions.RayActorError as exc:
                results.append(self._recover(i, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
        obs, self.reset_infos = (list(x) for x in zip(*results))
        self._last_obs = list(obs)
        self._reset_seeds()
        self._reset_options()
        return stack_obs(obs, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [a.step.remote(action) for a, action in zip(self.actors, actions)]

    def step_wait(self) -> VecEnvStepReturn:
        results = []
        for i, ref in enumerate(self._pending):
            try:
                res = self._get(ref)
                error = None if res is not None else "restarted while idle (between two steps)"
            except self._ray.exceptions.RayActorError as exc:
                res, error = None, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            if res is None:
                obs, reset_info = self._recover(i, error)
                info = {"TimeLimit.truncated": True, "terminal_observation": self._last_obs[i],
                        "worker_restarted": True, "worker_error": error}
                res = (obs, 0.0, True, info, reset_info)
            results.append(res)
        self._pending = []
        obs, rews, dones, infos, self.reset_infos = (list(x) for x in zip(*results))
        self._last_obs = list(obs)
        return stack_obs(obs, self.observation_space), np.stack(rews).astype(np.float32), np.stack(dones), infos

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        ray = self._ray
        if self._started_ok:  # an actor that never got a place has no env to close
            refs = [a.close.remote() for a in self.actors]
            ray.wait(refs, num_returns=len(refs), timeout=30)  # a dead or hung actor is killed below anyway
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        if self._owns_ray:
            ray.shutdown()

    def where(self) -> list[dict[str, Any]]:
        """Per env: the Ray node id and pid its actor runs in."""
        return self._get([a.where.remote() for a in self.actors])

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._call_each("render", range(self.num_envs))

    def has_attr(self, attr_name: str) -> bool:
        return all(self._call_each("has_attr", range(self.num_envs), attr_name))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call_each("get_attr", self._get_indices(indices), attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call_each("set_attr", self._get_indices(indices), attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        # Evaluation jobs come this way: pinned seeds make them repeatable, so a call that a
        # worker's death interrupted is simply made again on the restarted worker.
        return self._call_each("env_method", self._get_indices(indices), method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._call_each("is_wrapped", self._get_indices(indices), wrapper_class)

    def lifetime_restarts(self) -> list[int]:
        """Restarts per env over the whole run, a resumed one included (what a checkpoint keeps)."""
        return [a + b for a, b in zip(self.restarts_before, self.restarts)]

    def resume_restarts(self, saved: list[int]) -> None:
        """Continue the counts :meth:`lifetime_restarts` returned in an earlier process of the run, so
        that a restarted worker never gets a seed used before."""
        self.restarts_before[: len(saved)] = saved[: len(self.actors)]

    # -- recovery ----------------------------------------------------------------------------------------
    def _get(self, refs):
        return self._ray.get(refs)

    def _call_each(self, method: str, indices, *args) -> list[Any]:
        """``method(*args)`` on each actor in ``indices`` (in parallel); a call a worker's death
        interrupted is made again once Ray has restarted it (its next step then reports the restart)."""
        indices = list(indices)
        refs = [getattr(self.actors[i], method).remote(*args) for i in indices]
        out = []
        for i, ref in zip(indices, refs):
            deadline = time.monotonic() + self.config.restart_timeout_s
            while True:
                try:
                    out.append(self._get(ref))
                    break
                except self._ray.exceptions.ActorDiedError:
                    raise
                except self._ray.exceptions.RayActorError as exc:
                    if time.monotonic() >= deadline:
                        raise RuntimeError(f"env worker {i} did not come back within ray.restart_timeout_s") from exc
                    log.warning(
                        "env worker %d went away during %s (%s); calling it again", i, method, type(exc).__name__
                    )
                    time.sleep(0.2)
                    ref = getattr(self.actors[i], method).remote(*args)
        return out

    def _started(self, refs: list) -> list:
        """Wait for every actor's first answer; name the ones that never got a place to run."""
        ray = self._ray
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=self.config.start_timeout_s)
        if pending:
            missing = [i for i, r in enumerate(refs) if r in pending]
            raise RuntimeError(
                f"env actors {missing} did not start within ray.start_timeout_s={self.config.start_timeout_s:g} s: "
                f"either no node has {self.config.cpus_per_env:g} CPU / {self.config.gpus_per_env:g} GPU "
                "free for them (other work holds them), or building the env (loading the model, scoring the base) "
                "takes longer; raise ray.start_timeout_s for the latter."
            )
        return ray.get(refs)

    def _recover(self, index: int, error: str) -> tuple[Any, dict]:
        """Wait for Ray to restart actor ``index``, reseed it, and return its first observation."""
        ray = self._ray
        self.restarts[index] += 1
        if self.restarts[index] > self.config.max_restarts:
            raise RuntimeError(
                f"env worker {index} died {self.restarts[index]} times, more than ray.max_restarts="
                f"{self.config.max_restarts}; the last error: {error}"
            )
        seed = restart_seed(self._seed_base, index, self.restarts_before[index] + self.restarts[index])
        log.warning(
            "env worker %d died (%s); restart %d of %d, reseeded with %d",
            index,
            error,
            self.restarts[index],
            self.config.max_restarts,
            seed,
        )
        deadline = time.monotonic() + self.config.restart_timeout_s
        while True:
            try:
                return ray.get(
                    self.actors[index].reset.remote(seed, None), timeout=max(1.0, deadline - time.monotonic())
                )
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError) as again:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"env worker {index} did not come back within "
                        f"ray.restart_timeout_s={self.config.restart_timeout_s:g} s"
                    ) from again
                time.sleep(0.2)
            except ray.exceptions.ActorDiedError as dead:
                raise RuntimeError(f"env worker {index} died and cannot be restarted: {dead}") from dead
