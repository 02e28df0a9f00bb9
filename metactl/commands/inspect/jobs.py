"""Training runs an inspection needs, spread over worker processes while the main one scores.

Every job is one episode of a schedule through :meth:`metactl.runner.Engine.run` (the one runner)
in a worker that loaded its own engine once. Finished jobs are appended to ``jobs.jsonl`` in the
output directory under a key of (config, schedule, task, seed), so an interrupted inspection
resumes without retraining what it already has.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from metactl.config import RunConfig, build_config
from metactl.rundir import append_jsonl, read_jsonl
from metactl.schedule import Schedule

_ENGINE = None


def _init(run: dict) -> None:
    global _ENGINE
    import torch

    from metactl.runner import Engine
    from metactl.workers import exit_with_parent

    exit_with_parent()
    torch.set_num_threads(1)
    _ENGINE = Engine(build_config(RunConfig, run, "run"), progress=False)


def _train(schedule: Schedule, task_seed: int, seed: int, engine=None) -> dict[str, float]:
    from metactl.commands.inspect.ablate import kept_scores

    engine = engine or _ENGINE
    engine.load_task(task_seed)
    return kept_scores(engine.run(schedule, seed=seed, score_every_phase=False)[-1].scores)


class JobPool:
    """Submit (schedule, task, seed) episodes; get their final scores back, cached on disk.

    With ``workers=0`` nothing is spawned: each job runs when its result is asked for, on
    ``engine`` (the caller's, once it is done with its adapters), with the same results.
    """

    def __init__(self, run: RunConfig, out: Path, workers: int, engine=None) -> None:
        self.run = run
        self.path = Path(out) / "jobs.jsonl"
        self.cache = {r["key"]: r["scores"] for r in read_jsonl(self.path, appended=True)}
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self.futures: dict[str, Future] = {}
        self.pending: dict[str, tuple[Schedule, int, int]] = {}
        self.engine = engine
        self.trained = 0

    def __len__(self) -> int:
        """Jobs still to train."""
        return len(self.futures) + len(self.pending)

    def key(self, schedule: Schedule, task_seed: int, seed: int) -> str:
        text = f"{self.run.to_yaml()}\n{schedule.to_yaml()}\n{task_seed}\n{seed}"
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def submit(self, schedule: Schedule, task_seed: int, seed: int) -> str:
        k = self.key(schedule, task_seed, seed)
        if k in self.cache or k in self.futures or k in self.pending:
            return k
        if self.workers == 0:
            self.pending[k] = (schedule, task_seed, seed)
            return k
        if self._pool is None:
            # spawn: the main process already runs torch threads, which a fork would inherit broken.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init, initargs=(self.run.to_dict(),))
        self.futures[k] = self._pool.submit(_train, schedule, task_seed, seed)
        return k

    def result(self, key: str) -> dict[str, float]:
        if key not in self.cache:
            if key in self.pending:
                scores = _train(*self.pending.pop(key), engine=self.engine)
            else:
                scores = self.futures.pop(key).result()
            append_jsonl(self.path, {"key": key, "scores": scores})
            self.cache[key] = scores
            self.trained += 1
        return self.cache[key]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
