"""The one interface every controller and baseline implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from metactl.envs.config import EnvConfig
    from metactl.policies.config import ControllerConfig
    from metactl.schedule import Schedule

EpisodeSink = Callable[[int, dict], None]  # (env index, step info) for every env step


class Policy(ABC):
    """Produces a schedule for a task; some learn it from episodes first.

    ``learn`` spends exactly one update's worth of episodes (:attr:`episodes_per_update`) on
    the vectorised environment ``venv`` and reports every env step's info to ``sink``; the
    trainer calls it until the budget is spent and checkpoints in between. ``actor`` is what
    acts at evaluation time: a fixed :class:`Schedule` (open loop) or an object with SB3's
    ``predict(obs, deterministic=True)`` acting in ``env_id`` (closed loop).
    """

    name: ClassVar[str]
    env_id: ClassVar[str]  # the environment it learns in and acts in
    learns: ClassVar[bool] = True
    uses_ppo: ClassVar[bool] = False
    help: ClassVar[str] = ""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config

    @property
    def episodes_per_update(self) -> int:
        """Episodes one :meth:`learn` call spends: one batch, a whole number of them per env."""
        return self.config.resolved_n_envs()

    @property
    def updates(self) -> int:
        """Whole updates (or search batches) needed to spend ``config.total_episodes``."""
        return -(-self.config.total_episodes // self.episodes_per_update)

    @property
    def episodes(self) -> int:
        """The episodes the budget comes to in whole updates (0 for a policy that learns nothing)."""
        return self.updates * self.episodes_per_update if self.learns else 0

    def env_config(self, env: EnvConfig) -> EnvConfig:
        """The env settings this policy learns and acts in: the config's own, unless the policy's
        search space needs another (``tuned-lr`` searches learning rates, which a shares-only space
        does not have)."""
        return env

    def setup(self, venv: VecEnv, tb_dir: Path | None) -> None:
        """Build the learner on ``venv`` (called once, before ``learn`` or ``load``)."""

    def learn(self, venv: VecEnv, sink: EpisodeSink) -> None:
        """Spend one update's worth of episodes."""

    @abstractmethod
    def actor(self) -> Schedule | Any:
        """What acts at evaluation: a Schedule, or an SB3-style policy with ``predict``."""

    def finish(self) -> None:
        """Called once after the last update, before the controller is saved and acts."""

    def save(self, path: Path) -> None:
        """Write everything needed to continue or to act into the directory ``path``."""

    def load(self, path: Path, venv: VecEnv | None = None) -> None:
        """Restore what :meth:`save` wrote."""

    def close(self) -> None:
        """Release what :meth:`setup` opened (log writers); the trainer calls it at the end."""
