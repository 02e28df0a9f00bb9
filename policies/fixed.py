"""Hand-written schedules as policies: the ``default`` and ``expert`` baselines."""

from __future__ import annotations

from metactl.envs import BANDIT_ENV_ID
from metactl.policies.base import Policy
from metactl.schedule import Schedule


class FixedSchedule(Policy):
    """Runs ``configs/schedules/<schedule>.yaml`` on every task; spends no episodes learning."""

    env_id = BANDIT_ENV_ID
    learns = False
    schedule_name = ""

    def actor(self) -> Schedule:
        return Schedule.named(self.schedule_name, self.config.run.training.layer_groups)


class DefaultSchedule(FixedSchedule):
    name = "default"
    schedule_name = "default"
    help = "the built-in default schedule (SFT, then DPO); learns nothing"


class ExpertSchedule(FixedSchedule):
    name = "expert"
    schedule_name = "expert"
    help = "the hand-tuned expert schedule (docs/headroom.md); learns nothing"
