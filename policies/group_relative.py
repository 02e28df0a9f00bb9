"""Group-relative advantages for the controller's PPO (``ppo.group_size``).

An episode's return mixes what the policy chose with what it was dealt: the task (some tasks give
+1 whatever the schedule, others nothing) and the episode seed (data order and adapter init; one
schedule on one task gains -0.64 to +1.21 across seeds). With 8 episodes per update a learned
value cannot tell these apart from the actions, so most of the policy gradient is noise.

With ``group_size`` g, the envs run in groups of g that draw the same task and episode seed (their
numpy generators are seeded alike), each sampling its own actions. Every step of an episode then
gets the advantage ``R_i - mean(R_j, j != i)`` over the other episodes of its group: the
leave-one-out baseline of RLOO (arXiv 2402.14740) and the group baseline of GRPO. The baseline does
not depend on the episode's own actions (the others sample independently), so the gradient stays
unbiased while the task and the seed cancel. The value net still learns from PPO's returns; it only
stops setting the advantage of grouped episodes.

A Ray worker that restarts is seeded anew (``vec_env: ray``), so its group stops pairing for the rest
of the run; its episodes then keep PPO's advantage, as does any episode alone with its key.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


def whole_episodes(
    episode_starts: np.ndarray, dones: np.ndarray, keys: list[list[Hashable | None]]
) -> Iterator[tuple[int, int, int, Hashable | None]]:
    """``(env, first row, last row, key)`` of every whole episode in an SB3-shaped ``(steps, envs)``
    rollout: one whose first step starts it and whose last is done. An episode cut by the
    rollout's edge is skipped (its first row is not an episode start, or it never ends here)."""
    steps, envs = dones.shape
    for i in range(envs):
        t0 = 0
        for t in range(steps):
            if t > t0 and episode_starts[t, i]:
                t0 = t  # a new episode began without the last one's done row (rollout edge): not whole
            if dones[t, i]:
                if episode_starts[t0, i]:
                    yield i, t0, t, keys[t0][i]
                t0 = t + 1


def leave_one_out_advantages(
    advantages: np.ndarray,
    rewards: np.ndarray,
    episode_starts: np.ndarray,
    dones: np.ndarray,
    keys: list[list[Hashable | None]],
    gamma: float = 1.0,
) -> int:
    """Overwrite, in place, the advantages of every whole episode whose key (task, episode seed) is
    shared by another whole episode of the rollout; return how many episodes were overwritten.

    Arrays are SB3 rollout-buffer shaped, ``(steps, envs)``; ``episode_starts[t, i]`` marks the first
    step of an episode and ``dones[t, i]`` its last. An episode cut by the rollout's edge, or alone
    with its key (its twin diverged and drifted to another rollout), keeps PPO's advantage.
    """
    groups: dict[Hashable, list[tuple[int, int, int, float]]] = defaultdict(list)
    for i, t0, t, key in whole_episodes(episode_starts, dones, keys):
        if key is not None:
            ret = float(sum(rewards[k, i] * gamma ** (k - t0) for k in range(t0, t + 1)))
            groups[key].append((i, t0, t, ret))
    changed = 0
    for members in groups.values():
        n = len(members)
        if n < 2:
            continue
        total = sum(m[3] for m in members)
        for i, t0, t1, ret in members:
            advantages[t0 : t1 + 1, i] = ret - (total - ret) / (n - 1)
            changed += 1
    return changed


class GroupRelativeAdvantage(BaseCallback):
    """Records each step's (task seed, episode seed) and done flag during a rollout, then replaces
    the advantages SB3 computed with :func:`leave_one_out_advantages` before the update."""

    def _on_rollout_start(self) -> None:
        buf = self.model.rollout_buffer
        self._keys: list[list[Hashable | None]] = [[None] * buf.n_envs for _ in range(buf.buffer_size)]
        self._dones = np.zeros((buf.buffer_size, buf.n_envs), dtype=bool)

    def _on_step(self) -> bool:
        pos = self.model.rollout_buffer.pos  # the row this step is about to be stored in
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"])):
            seeds = (info.get("task_seed"), info.get("episode_seed"))
            self._keys[pos][i] = None if None in seeds else seeds
            self._dones[pos, i] = bool(done)
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.rollout_buffer
        grouped = leave_one_out_advantages(
            buf.advantages, buf.rewards, buf.episode_starts, self._dones, self._keys, gamma=self.model.gamma
        )
        self.logger.record("train/grouped_episodes", grouped)
