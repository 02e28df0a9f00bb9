"""Controllers and baselines behind one interface (:class:`metactl.policies.base.Policy`), by name.

``ppo`` and ``bandit`` learn (SB3 PPO); ``random`` and ``optuna`` search (``tuned-lr``: Optuna over
the tools' learning rates only); ``default`` and
``expert`` are fixed schedules, as are the published hand rules ``alright`` and ``maxright`` and the
summed-loss ``mix``. All of them run episodes through the same environments and the
same runner, so the same budget means the same thing for each.
"""

from metactl.errors import check_choice
from metactl.policies.base import Policy
from metactl.policies.config import ControllerConfig
from metactl.policies.fixed import (
    AlrightSchedule,
    DefaultSchedule,
    ExpertSchedule,
    MaxrightSchedule,
    MixSchedule,
)
from metactl.policies.sb3 import BanditPolicy, PPOPolicy
from metactl.policies.search import OptunaTPE, RandomSearch, TunedLR

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        PPOPolicy, BanditPolicy, RandomSearch, OptunaTPE, TunedLR, DefaultSchedule, ExpertSchedule,
        AlrightSchedule, MaxrightSchedule, MixSchedule,
    )
}



def policy_class(name: str) -> type[Policy]:
    """The registered policy ``name``; an unknown name fails naming the allowed ones (and the closest)."""
    check_choice("policy", name, POLICIES)
    return POLICIES[name]


def make_policy(config: ControllerConfig) -> Policy:
    return policy_class(config.policy)(config)


__all__ = ["POLICIES", "Policy", "make_policy", "policy_class"]
