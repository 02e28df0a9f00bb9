"""Gymnasium environments around :mod:`metactl.runner` (phase-level and schedule-level).

Registered ids (``gymnasium.make(id, run=RunConfig(...), env=EnvConfig(...))``; every metactl
command builds its envs that way, through :func:`make`):

- ``metactl/Adaptation-v0``: one step = one phase (:class:`metactl.envs.phase_env.PhaseControlEnv`).
- ``metactl/ScheduleBandit-v0``: one step = a whole schedule (:class:`metactl.envs.bandit_env.ScheduleBanditEnv`).

Both call the runner; neither has its own training or scoring code.
"""

import gymnasium as gym
from gymnasium.envs.registration import register, registry

from metactl.envs.bandit_env import ScheduleBanditEnv
from metactl.envs.config import EnvConfig
from metactl.envs.phase_env import PhaseControlEnv

PHASE_ENV_ID = "metactl/Adaptation-v0"
BANDIT_ENV_ID = "metactl/ScheduleBandit-v0"

# No max_episode_steps: the envs truncate themselves at the step budget, and a TimeLimit wrapper
# would duplicate (and could contradict) that.
for _id, _entry in (
    (PHASE_ENV_ID, "metactl.envs.phase_env:PhaseControlEnv"),
    (BANDIT_ENV_ID, "metactl.envs.bandit_env:ScheduleBanditEnv"),
):
    if _id not in registry:
        register(id=_id, entry_point=_entry)


def make(env_id: str, **kwargs) -> PhaseControlEnv | ScheduleBanditEnv:
    """``gymnasium.make(env_id, **kwargs)``, unwrapped: the metactl env itself, whose own methods
    (jobs, worker index) SB3's VecEnvs and the commands call. The env checker is off here because
    the tests run gymnasium's and SB3's full ``check_env`` on both envs."""
    return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped


__all__ = ["BANDIT_ENV_ID", "PHASE_ENV_ID", "EnvConfig", "PhaseControlEnv", "ScheduleBanditEnv", "make"]
