"""Gymnasium environments around :mod:`metactl.runner` (phase-level and schedule-level).

Registered ids (``gymnasium.make(id, run=RunConfig(...), env=EnvConfig(...))``):

- ``metactl/Adaptation-v0``: one step = one phase (:class:`envs.phase_env.PhaseControlEnv`).
- ``metactl/ScheduleBandit-v0``: one step = a whole schedule (:class:`envs.bandit_env.ScheduleBanditEnv`).

Both call the runner; neither has its own training or scoring code.
"""

from gymnasium.envs.registration import register, registry

from envs.bandit_env import ScheduleBanditEnv
from envs.config import EnvConfig
from envs.phase_env import PhaseControlEnv

PHASE_ENV_ID = "metactl/Adaptation-v0"
BANDIT_ENV_ID = "metactl/ScheduleBandit-v0"

# No max_episode_steps: the envs truncate themselves at the step budget, and a TimeLimit wrapper
# would duplicate (and could contradict) that.
for _id, _entry in ((PHASE_ENV_ID, "envs.phase_env:PhaseControlEnv"), (BANDIT_ENV_ID, "envs.bandit_env:ScheduleBanditEnv")):
    if _id not in registry:
        register(id=_id, entry_point=_entry)

__all__ = ["BANDIT_ENV_ID", "PHASE_ENV_ID", "EnvConfig", "PhaseControlEnv", "ScheduleBanditEnv"]
