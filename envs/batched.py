"""``vec_env: batched``: K phase envs whose episodes advance together on one population engine.

:class:`BatchedVecEnv` is an SB3 ``VecEnv`` over K :class:`PhaseControlEnv` instances, each on its
own slot of one :class:`metactl.population.Population`. ``step_wait`` lets every env decode its
action (``plan_step``), runs all K phases in one batched pass (one forward and backward per tool
per step, the observe or final scoring and the interference reading batched too), then lets each
env finish its step (``finish_step``): the env logic (observations, shaped rewards, divergence,
episode end) is the phase env's own, line for line. Envs that end their episode are reset
together, the SB3 way (``terminal_observation`` in the info).

Evaluation jobs (``env_method("run_jobs", ...)``) run batched too, packed into passes of one kind:
fixed schedules through :meth:`Population.run`, greedy actors phase by phase through the same
plan/run/finish path as ``step_wait``.
:class:`metactl.envs.sharded.ShardedVecEnv` splits the K envs over several such processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from metactl.config import RunConfig
from metactl.envs.config import EnvConfig
from metactl.envs.jobs import Job, adapter_files, job_row
from metactl.envs.phase_env import PhaseControlEnv
from metactl.episode import PhaseResult
from metactl.population import Population
from metactl.runner import TaskState
from metactl.schedule import Phase, Schedule
from metactl.scoring import Scorer


class _SlotAdapters:
    def __init__(self, population: Population, slot: int) -> None:
        self.population, self.slot = population, slot

    def norms(self) -> dict[str, list[float]]:
        return self.population.norms(self.slot)

    def save(self, out_dir: Path) -> dict[str, Path]:
        return self.population.adapters.save(self.slot, out_dir, str(self.population.model_path))


class _SlotEpisode:
    def __init__(self, engine: SlotEngine) -> None:
        self.engine = engine

    def run_phase(self, phase: Phase, steps: int, score: bool = True, on_step=None,
                  scorer: Scorer | None = None) -> PhaseResult:
        """This slot's phase alone (the batched path runs many through :meth:`Population.run_phases`)."""
        eng = self.engine
        scorer = (scorer or eng.task.scorer) if score else None
        res = eng.population.run_phases({eng.slot: (phase, steps)}, {eng.slot: scorer})[eng.slot]
        if isinstance(res, FloatingPointError):
            raise res
        return res


class SlotEngine:
    """One slot of a population, with the parts of :class:`metactl.runner.Engine` an env uses."""

    def __init__(self, population: Population, slot: int) -> None:
        self.population, self.slot = population, slot
        self.config = population.config
        self.tool_names = population.tool_names
        self.layer_map = population.layer_map
        self.model_path = population.model_path
        self.adapters = _SlotAdapters(population, slot)
        self.task: TaskState = population.load_task(self.config.task_seed)
        self.task_key: tuple[int, str | None] = (self.config.task_seed, None)

    def load_task(self, task_seed: int, suite_name: str | None = None) -> TaskState:
        self.task = self.population.load_task(task_seed, suite_name=suite_name)
        self.task_key = (task_seed, suite_name)
        return self.task

    def episode(self, seed: int) -> _SlotEpisode:
        task_seed, suite_name = self.task_key
        self.population.begin(self.slot, task_seed, seed, suite_name)
        return _SlotEpisode(self)

    def gradient_cosines(self, rows: int = 8) -> dict[str, list[float]]:
        return self.population.gradient_cosines([self.slot], rows)[self.slot]

    def run(self, schedule: Schedule, seed: int | None = None, score_every_phase: bool | None = None,
            observe_probes: int | None = None, **_: Any) -> list[PhaseResult]:
        seed = self.config.training.seed if seed is None else seed
        task_seed, suite_name = self.task_key
        res = self.population.run(
            [schedule], [seed], [task_seed], score_every_phase, observe_probes, slots=[self.slot], suite_name=suite_name
        )[0]
        if isinstance(res, FloatingPointError):
            raise res
        return res


class BatchedVecEnv(VecEnv):
    """K phase envs on one population engine (see the module docstring)."""

    def __init__(self, run: RunConfig, env: EnvConfig, n_envs: int, offset: int = 0) -> None:
        """``offset``: the global index of the first env (a shard of a :class:`ShardedVecEnv`), so
        each env runs its own share of the evaluation jobs wherever it lives."""
        self.population = Population(run, n_envs)
        from metactl.envs import PHASE_ENV_ID, make

        self.envs: list[PhaseControlEnv] = [
            make(PHASE_ENV_ID, run=run, env=env, engine=SlotEngine(self.population, i)) for i in range(n_envs)
        ]
        for i, e in enumerate(self.envs):
            e.set_worker_index(offset + i)
        first = self.envs[0]
        super().__init__(n_envs, first.observation_space, first.action_space)
        self._actions: np.ndarray | None = None

    # -- the batched middle of reset and step ------------------------------------------------------
    def _reset_envs(self, indices: list[int]) -> dict[int, tuple[np.ndarray, dict]]:
        for i in indices:
            env = self.envs[i]
            super(PhaseControlEnv, env).reset(seed=self._seeds[i], options=self._options[i] or None)
            env.start_episode(self._options[i] or None)
        for i in indices:  # seeds and options apply to one reset, as in SB3's VecEnvs
            self._seeds[i] = None
            self._options[i] = {}
        cosines = self.population.gradient_cosines(indices, self.envs[0].env_config.interference_rows)
        return {i: self.envs[i].first_observation(cosines[i]) for i in indices}

    def reset(self) -> np.ndarray:
        out = self._reset_envs(list(range(self.num_envs)))
        self.reset_infos = [out[i][1] for i in range(self.num_envs)]
        return np.stack([out[i][0] for i in range(self.num_envs)])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def _run_planned(self, plans: dict[int, tuple[Phase, int, Scorer | None]]) -> tuple[dict, dict]:
        """The planned phases of these envs in one batched pass, each result checked as the env checks
        it (a non-finite composite becomes its FloatingPointError), then the interference reading of
        every env that goes on."""
        results = self.population.run_phases(
            {i: (phase, steps) for i, (phase, steps, _) in plans.items()},
            {i: scorer for i, (_, _, scorer) in plans.items()},
        )
        for i, res in results.items():
            if not isinstance(res, FloatingPointError):
                try:
                    self.envs[i].check_result(res)
                except FloatingPointError as exc:
                    results[i] = exc
        reading = [i for i in plans
                   if not self.envs[i].in_last_phase and not isinstance(results[i], FloatingPointError)]
        rows = self.envs[0].env_config.interference_rows
        return results, (self.population.gradient_cosines(reading, rows) if reading else {})

    def step_wait(self):
        plans = {i: env.plan_step(self._actions[i]) for i, env in enumerate(self.envs)}
        results, cosines = self._run_planned(plans)
        obs, rewards, dones, infos = [], np.zeros(self.num_envs, dtype=np.float32), [], []
        for i, env in enumerate(self.envs):
            o, r, terminated, truncated, info = env.finish_step(plans[i][0], results[i], cosines.get(i))
            info["TimeLimit.truncated"] = truncated and not terminated
            obs.append(o)
            rewards[i] = r
            dones.append(terminated or truncated)
            infos.append(info)
        done = [i for i, d in enumerate(dones) if d]
        if done:
            fresh = self._reset_envs(done)
            for i in done:
                infos[i]["terminal_observation"] = obs[i]
                obs[i], self.reset_infos[i] = fresh[i]
        return np.stack(obs), rewards, np.array(dones), infos

    # -- the rest of the VecEnv API, on the envs in this process -------------------------------------
    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        for i in self._get_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        if method_name == "run_jobs":
            return self.run_jobs(*method_args, indices=indices, **method_kwargs)
        return [getattr(self.envs[i], method_name)(*method_args, **method_kwargs) for i in self._get_indices(indices)]

    # -- evaluation jobs, batched ------------------------------------------------------------------
    def run_jobs(self, jobs_by_worker: dict[int, list[Job]], indices=None) -> list[list[dict]]:
        """What ``env.run_jobs`` gives for each env in ``indices`` (its own worker's jobs), computed a
        pass at a time. Every env here shares one population, so a job may run on any of them: the
        jobs are packed into passes of one kind (fixed schedules, or actors that read observations
        between phases), as many per pass as there are envs. Taking every env's ``r``-th job together
        ran up to three part-filled passes per round; packing saves each pass's fixed part, a modest
        saving, as most of a pass's cost grows with the slots it fills."""
        local = list(self._get_indices(indices))
        queues = {i: jobs_by_worker.get(self.envs[i].worker_index, []) for i in local}
        pending = [(i, r, job) for i in local for r, job in enumerate(queues[i])]
        results: dict[tuple[int, int], dict] = {}
        for fixed in (True, False):
            kind = [(i, r, job) for i, r, job in pending if (job.schedule is not None) == fixed]
            for start in range(0, len(kind), len(local)):
                chunk = kind[start:start + len(local)]
                ran = self._run_pass({env: job for env, (_, _, job) in zip(local, chunk)})
                for env, (i, r, _) in zip(local, chunk):
                    results[(i, r)] = ran[env]
        return [[results[(i, r)] for r in range(len(queues[i]))] for i in local]

    def _run_pass(self, jobs: dict[int, Job]) -> dict[int, dict]:
        import dataclasses
        import pickle

        from metactl.errors import DivergedRun

        jobs = {i: dataclasses.replace(j, actor=pickle.loads(j.actor)) if isinstance(j.actor, bytes) else j
                for i, j in jobs.items()}
        done: dict[int, tuple[Schedule, dict] | FloatingPointError] = {}
        fixed = {i: j for i, j in jobs.items() if j.schedule is not None}
        if fixed:
            slots = list(fixed)
            results = self.population.run(
                [fixed[i].schedule for i in slots], [fixed[i].episode_seed for i in slots],
                [fixed[i].task_seed for i in slots], score_every_phase=False, slots=slots,
                suite_name=[fixed[i].suite for i in slots],
            )
            for i, res in zip(slots, results):
                done[i] = res if isinstance(res, FloatingPointError) else (fixed[i].schedule, res[-1].scores)
        done.update(self._act_greedily({i: j for i, j in jobs.items() if j.schedule is None}))
        out = {}
        for i, job in jobs.items():
            res, env = done[i], self.envs[i]
            task = self.population.load_task(job.task_seed, suite_name=job.suite)
            where = {"suite": job.suite or env.run_config.suite, "family": task.suite.name,
                     "base": task.base_scores, "model_path": self.population.model_path}
            if isinstance(res, FloatingPointError):
                message = str(DivergedRun(job.label, job.task_seed, job.episode_seed, str(res)))
                out[i] = job_row(job, **where, diverged=message, penalty=env.env_config.diverged_penalty)
                continue
            schedule, final = res
            actions = env.actions if job.schedule is None else None
            observations = env.observations if job.schedule is None else None
            out[i] = job_row(job, **where, schedule=schedule, scores=final, actions=actions, observations=observations)
            if job.save_adapters:
                out[i]["adapter_files"] = adapter_files(self.envs[i].engine.adapters)
        return out

    def _act_greedily(self, jobs: dict[int, Job]) -> dict[int, tuple[Schedule, dict] | FloatingPointError]:
        """Each job's actor acting deterministically in its env, all envs' phases run together."""
        if not jobs:
            return {}
        for i, job in jobs.items():
            env = self.envs[i]
            super(PhaseControlEnv, env).reset(options=job.options())
            env.start_episode(job.options())
        cosines = self.population.gradient_cosines(list(jobs), self.envs[0].env_config.interference_rows)
        obs = {i: self.envs[i].first_observation(cosines[i])[0] for i in jobs}
        out: dict[int, tuple[Schedule, dict] | FloatingPointError] = {}
        live = list(jobs)
        while live:
            plans = {i: self.envs[i].plan_step(jobs[i].actor.predict(obs[i], deterministic=True)[0]) for i in live}
            results, cosines = self._run_planned(plans)
            for i in list(live):
                env = self.envs[i]
                obs[i], _, terminated, truncated, info = env.finish_step(plans[i][0], results[i], cosines.get(i))
                if "diverged" in info:
                    task = jobs[i].task_seed
                    out[i] = FloatingPointError(f"greedy rollout on task {task} diverged: {info['diverged']}")
                elif terminated or truncated:
                    out[i] = (env.schedule(name=jobs[i].label), dict(env.scores))
                if i in out:
                    live.remove(i)
        return out

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in self.envs]
