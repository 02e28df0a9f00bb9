"""Hand-written schedules as policies: ``default``, ``expert`` and the published hand rules
(``alright``, ``maxright``) with the summed-loss ``mix``."""

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


class AlrightSchedule(FixedSchedule):
    name = "alright"
    schedule_name = "alright"
    help = "ALRIGHT (arXiv 2410.15483): each step SFT or DPO at random, lambda 0.5; learns nothing"


class MaxrightSchedule(FixedSchedule):
    name = "maxright"
    schedule_name = "maxright"
    help = "MAXRIGHT (arXiv 2410.15483): each step the tool furthest above its best loss; learns nothing"


class MixSchedule(FixedSchedule):
    name = "mix"
    schedule_name = "mix"
    help = "SFT and DPO every step on their summed losses, at equal forward/backward passes; learns nothing"
