"""Fault injection for the distributed env workers: an env that kills its own process, once.

Recovery code that never ran is not recovery code. :class:`DieOnce` lets a test (or a user
checking their cluster set-up) make a worker disappear mid-episode exactly as an OOM kill does
(``SIGKILL``: no cleanup, no exception), and only once: a marker file outlives the process, so the
restarted worker sees it and carries on.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import gymnasium as gym

from metactl.envs.vector import make_env


class DieOnce(gym.Wrapper):
    """SIGKILL this process at the ``at_step``-th ``step`` call, unless ``marker`` exists (then create it).

    Several workers may share one marker: the first to reach the step dies, the others go on.
    """

    def __init__(self, env: gym.Env, marker: str | Path, at_step: int = 1) -> None:
        super().__init__(env)
        self.marker = Path(marker)
        self.at_step = at_step
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.at_step and self._claim():
            os.kill(os.getpid(), signal.SIGKILL)
        return self.env.step(action)

    def _claim(self) -> bool:
        # O_EXCL: of several workers reaching the step together, exactly one dies.
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return True


def make_env_that_dies_once(marker: str | Path, at_step: int, *args, **kwargs) -> gym.Env:
    """:func:`metactl.envs.vector.make_env`, whose process dies at its ``at_step``-th step (once per marker)."""
    env = make_env(*args, **kwargs)
    return DieOnce(env, marker, at_step)
