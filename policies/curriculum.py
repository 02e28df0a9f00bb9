"""A curriculum over the training tasks (``ppo.curriculum``): prioritized level replay.

Training draws its tasks uniformly from ``env.train_task_seeds``, so every family gets the same
share of episodes whether the policy has anything left to learn there or not. Prioritized level
replay (PLR, Jiang et al. 2021, arXiv 2010.03934) draws more often the levels whose last episodes
had large advantages: where the return moved most with what the policy did, the policy gradient
has the most to say. Here a level is a family of the training suite (``family``; a single-family
suite has one, so it falls back to its task seeds) or a task seed (``task``).

After each rollout a level's score is the mean absolute advantage of its whole episodes in that
rollout, the advantages PPO is about to train on (with ``group_size`` > 1 the leave-one-out ones,
so a mirrored pair scores the size of its central difference). A level the rollout did not visit
keeps its last score; one never scored ranks first, so every level is visited before any is
favoured. The draw is PLR's rank prioritisation mixed with the uniform draw:

    P(level) = (1 - uniform) * rank^(-1/temperature) / sum_j rank_j^(-1/temperature) + uniform / levels

and a level's probability is shared evenly by its task seeds. The envs draw from it with their own
``np_random`` (``set_task_weights``), so groups of envs seeded alike still draw the same task.

SB3 resets an env as soon as its episode ends, so the episodes that start a rollout were drawn as
the previous rollout ended, before its scores were in: with one episode per env per rollout (the
default, 8 envs and 8 episodes per update) a rollout's scores steer the draws of the rollout after
next; with more episodes per env, the later ones of the next rollout already use them. The scores
are saved with each checkpoint (``curriculum.json``), and a resumed run hands them to the envs before
its first reset, so its first episodes draw with them (the interrupted run drew those before the
scores existed). A restarted Ray worker draws uniformly until the next rollout ends.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from metactl.policies.group_relative import whole_episodes
from metactl.rundir import atomic_write_text
from metactl.tasks.mixture import member_task, members

CURRICULUM_FILE = "curriculum.json"  # in each checkpoint: the levels' last scores


def rank_priorities(scores: Sequence[float | None], temperature: float, uniform: float) -> np.ndarray:
    """PLR's rank-based draw over levels, mixed with the uniform one; ``None`` is a level never
    scored, which ranks first (ties among them share rank 1, so with nothing scored the draw is
    uniform)."""
    n = len(scores)
    if n == 0:
        raise ValueError("no levels to draw from")
    scored = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: -float(scores[i]))
    rank = np.ones(n)
    offset = 1 if len(scored) < n else 0  # unscored levels hold rank 1
    for r, i in enumerate(scored):
        rank[i] = offset + r + 1
    h = rank ** (-1.0 / temperature)
    return (1.0 - uniform) * h / h.sum() + uniform / n


def level_of(suite: str, mode: str) -> Callable[[int], Hashable]:
    """What ``mode`` groups a training task seed into: its family in a mixture suite, else the seed."""
    names = members(suite) if mode == "family" else None
    if names:
        return lambda seed: member_task(names, seed)[0]
    return lambda seed: seed


class TaskCurriculum(BaseCallback):
    """Scores the levels after every rollout and hands the envs the next draw's weights."""

    def __init__(self, seeds: tuple[int, int], level: Callable[[int], Hashable], temperature: float,
                 uniform: float) -> None:
        super().__init__()
        lo, hi = seeds
        self.seeds = list(range(lo, hi))
        self.level = level
        self._seed_levels = [level(s) for s in self.seeds]
        self.levels = list(dict.fromkeys(self._seed_levels))  # first-seen order
        self._per_level = Counter(self._seed_levels)  # task seeds per level
        self.temperature, self.uniform = temperature, uniform
        self.scores: dict[Hashable, float] = {}

    def weights(self) -> list[float]:
        """Each training task seed's probability, in seed order."""
        p = rank_priorities([self.scores.get(v) for v in self.levels], self.temperature, self.uniform)
        per_level = dict(zip(self.levels, p))
        w = np.array([per_level[v] / self._per_level[v] for v in self._seed_levels])
        return (w / w.sum()).tolist()

    def apply(self, venv) -> None:
        venv.env_method("set_task_weights", self.weights())

    def _on_rollout_start(self) -> None:
        buf = self.model.rollout_buffer
        self._seeds = np.full((buf.buffer_size, buf.n_envs), -1, dtype=np.int64)
        self._dones = np.zeros((buf.buffer_size, buf.n_envs), dtype=bool)

    def _on_step(self) -> bool:
        pos = self.model.rollout_buffer.pos
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"])):
            seed = info.get("task_seed")
            self._seeds[pos, i] = -1 if seed is None else int(seed)
            self._dones[pos, i] = bool(done)
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        keys = [[int(s) if s >= 0 else None for s in row] for row in self._seeds]
        seen: dict[Hashable, list[float]] = defaultdict(list)
        for i, t0, t1, seed in whole_episodes(buf.episode_starts, self._dones, keys):
            if seed is not None and self.seeds[0] <= seed <= self.seeds[-1]:  # training tasks only
                seen[self.level(seed)].append(float(np.abs(buf.advantages[t0 : t1 + 1, i]).mean()))
        for level, values in seen.items():
            self.scores[level] = float(np.mean(values))
        self.apply(self.training_env)
        self.logger.record("curriculum/max_task_probability", max(self.weights()))

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        rows = [{"level": v, "score": self.scores[v]} for v in self.levels if v in self.scores]
        atomic_write_text(Path(path) / CURRICULUM_FILE, json.dumps(rows))

    def load(self, path: Path) -> None:
        saved = Path(path) / CURRICULUM_FILE
        self.scores = {}  # a fallback to an older checkpoint must not keep a newer one's scores
        if saved.is_file():
            for row in json.loads(saved.read_text()):
                if row["level"] in self.levels:  # a family name or a task seed, as saved
                    self.scores[row["level"]] = float(row["score"])
