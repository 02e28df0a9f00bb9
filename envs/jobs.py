"""Evaluation jobs that run inside the env's own process (so a VecEnv's workers run them in parallel).

A job pins a task seed and an episode seed and either runs a fixed schedule through the runner
or lets an actor (anything with SB3's ``predict``) act greedily in the env. Both return the
schedule that ran, the final scores and the base's scores on that task.
"""

from __future__ import annotations

import dataclasses
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from metactl.errors import DivergedRun
from metactl.rundir import atomic_write_dir
from metactl.schedule import Schedule


def adapter_files(adapters) -> dict[str, bytes]:
    """Every file of ``adapters.save`` (peft format), relative path -> bytes."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        adapters.save(Path(tmp))
        return {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(Path(tmp).rglob("*")) if p.is_file()}


def write_adapter_files(path: str, files: dict[str, bytes]) -> None:
    """Write what :func:`adapter_files` returned; built aside and renamed, so a kill never leaves half a folder."""
    from pathlib import Path

    def fill(tmp: Path) -> None:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)

    atomic_write_dir(path, fill)


def job_row(job: Job, *, suite: str, family: str, base: dict, model_path: str, schedule: Schedule | None = None,
            scores: dict | None = None, diverged: str | None = None, penalty: float = 0.0,
            actions: list[list[float]] | None = None, observations: list[list[float]] | None = None) -> dict:
    """One evaluation row. ``actions``: a closed-loop actor's action per phase as the env received it
    (before decoding; an enveloped actor's after its clipping), kept so a policy's range on training
    tasks can be read from rows (``envelope.json``). A diverged job keeps its row (``scores`` None,
    ``diverged`` the message): one method's blow-up on one task is a result, scored as the env scores
    it (gain ``-penalty``, see :func:`metactl.evaluation.row_gain`), and must not throw away every
    other method's runs. ``observations``: what each of those actions was decided on (a guard is
    taken from them; eval.jsonl leaves them out)."""
    row = {
        "label": job.label, "suite": suite, "family": family, "task_seed": job.task_seed,
        "episode_seed": job.episode_seed, "scores": scores, "base": dict(base), "schedule": schedule,
        "model_path": model_path,
    }
    if diverged is not None:
        row.update(diverged=diverged, penalty=float(penalty))
    if actions is not None:
        row["actions"] = [list(a) for a in actions]
    if observations is not None:
        row["observations"] = [list(o) for o in observations[: len(row.get("actions", observations))]]
    return row


@dataclass
class Job:
    task_seed: int
    episode_seed: int
    schedule: Schedule | None = None
    actor: Any = None  # an object with SB3's predict(), or it pickled
    label: str = ""
    save_adapters: str | None = None  # the caller writes the resulting adapters here (peft format)
    suite: str | None = None  # the task's suite (None: the run's own, run.suite)

    def options(self) -> dict[str, Any]:
        """The env ``reset`` options that pin this job's task and episode."""
        pinned = {"task_seed": self.task_seed, "episode_seed": self.episode_seed}
        return {**pinned, "suite": self.suite} if self.suite else pinned


class EngineEnvMixin(ABC):
    """What both envs share: the start of an episode, and evaluation jobs run in the env's
    process (``worker_index`` is set per worker by the trainer)."""

    worker_index: int = 0
    _resumed_rng: Any = None
    task_weights: np.ndarray | None = None  # ppo.curriculum's draw over env.train_task_seeds; None: uniform
    actions: list[list[float]] | None = None  # the phase env records a greedy rollout's actions; the bandit none
    observations: list[list[float]] | None = None  # and the observation each action was decided on

    def resume_rng(self, rng: Any) -> None:
        """Continue a checkpointed run from ``rng``: the next reset keeps it, whatever seed it is given
        (the learner's setup seeds the envs again before the first reset of a resumed run)."""
        self._resumed_rng = rng

    def set_task_weights(self, weights: list[float] | None) -> None:
        """Draw later training tasks with these probabilities, one per seed of ``env.train_task_seeds``
        in order (a curriculum, ``ppo.curriculum``); None: uniformly."""
        if weights is None:
            self.task_weights = None
            return
        lo, hi = self.env_config.train_task_seeds
        w = np.asarray(weights, dtype=float)
        if w.shape != (hi - lo,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"task weights: expected {hi - lo} non-negative finite numbers (one per task seed in [{lo}, {hi})) "
                f"with a positive sum; got {weights!r}"
            )
        self.task_weights = w / w.sum()

    def begin_task(self, options: dict[str, Any] | None) -> None:
        """Pin or draw (from ``self.np_random``) the task and episode seeds; load the task (of
        ``options["suite"]`` when given, an evaluation suite; else of the run's suite)."""
        if self._resumed_rng is not None:
            self.np_random, self._resumed_rng = self._resumed_rng, None
        options = options or {}
        lo, hi = self.env_config.train_task_seeds
        if "task_seed" in options:
            self.task_seed = int(options["task_seed"])
        elif self.task_weights is None:
            self.task_seed = int(self.np_random.integers(lo, hi))
        else:
            self.task_seed = lo + int(self.np_random.choice(hi - lo, p=self.task_weights))
        self.episode_seed = (
            int(options["episode_seed"]) if "episode_seed" in options else int(self.np_random.integers(2**31 - 1))
        )
        self.suite_name = options.get("suite")
        self.engine.load_task(self.task_seed, suite_name=self.suite_name)

    @property
    def observation_labels(self) -> list[str]:
        """The name of every observation entry (as ``reset``'s info gives them), for wrappers that
        treat entries differently (``ppo.obs_noise`` leaves the clock exact)."""
        return list(self.observer.labels)

    def set_worker_index(self, index: int) -> None:
        # A method, not set_attr: VecEnv.set_attr would set it on the Monitor wrapper.
        self.worker_index = index

    def run_jobs(self, jobs_by_worker: dict[int, list[Job]]) -> list[dict]:
        """This worker's share of the jobs. A diverged job comes back as a row with ``diverged`` set
        (:func:`job_row`): an exception would kill a subprocess worker and every other job's result."""
        out = []
        for job in jobs_by_worker.get(self.worker_index, []):
            try:
                out.append(self.run_job(job))
            except DivergedRun as exc:
                task = self.engine.task
                out.append(job_row(
                    job, suite=job.suite or self.run_config.suite, family=task.suite.name, base=task.base_scores,
                    model_path=self.engine.model_path, diverged=str(exc), penalty=self.env_config.diverged_penalty,
                ))
        return out

    def run_job(self, job: Job) -> dict:
        """Run one job here; a run that goes non-finite raises :class:`DivergedRun`."""
        try:
            return self._run_job(job)
        except FloatingPointError as exc:  # DivergedError and non-finite scores included
            raise DivergedRun(job.label, job.task_seed, job.episode_seed, str(exc)) from exc

    def _run_job(self, job: Job) -> dict:
        if job.schedule is not None:
            engine = self.engine
            engine.load_task(job.task_seed, suite_name=job.suite)
            results = engine.run(job.schedule, seed=job.episode_seed, score_every_phase=False)
            schedule, final = job.schedule, results[-1].scores
        else:
            if isinstance(job.actor, bytes):
                # Pickled by this run's own trainer for its own workers (never read from a run dir).
                job = dataclasses.replace(job, actor=pickle.loads(job.actor))
            schedule, final = self.act_greedily(job)
        task = self.engine.task
        actions = self.actions if job.schedule is None else None
        observations = self.observations if job.schedule is None else None
        out = job_row(job, suite=job.suite or self.run_config.suite, family=task.suite.name, base=task.base_scores,
                      model_path=self.engine.model_path, schedule=schedule, scores=final, actions=actions,
                      observations=observations)
        if job.save_adapters:
            # As bytes, for the caller to write: a worker may sit on another node of a Ray cluster,
            # where the run directory does not exist.
            out["adapter_files"] = adapter_files(self.engine.adapters)
        return out

    @abstractmethod
    def act_greedily(self, job: Job) -> tuple[Schedule, dict]:
        """Let ``job.actor`` act deterministically on the job's task; the schedule it ran and the final scores."""
