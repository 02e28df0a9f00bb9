"""Controllers and baselines behind one interface (:class:`metactl.policies.base.Policy`), by name.

``ppo`` and ``bandit`` learn (SB3 PPO); ``random`` and ``optuna`` search; ``default`` and
``expert`` are fixed schedules. All of them run episodes through the same environments and the
same runner, so the same budget means the same thing for each.
"""

from metactl.errors import check_choice
from metactl.policies.base import Policy
from metactl.policies.config import ControllerConfig
from metactl.policies.fixed import DefaultSchedule, ExpertSchedule
from metactl.policies.sb3 import BanditPolicy, PPOPolicy
from metactl.policies.search import OptunaTPE, RandomSearch

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (PPOPolicy, BanditPolicy, RandomSearch, OptunaTPE, DefaultSchedule, ExpertSchedule)
}



def policy_class(name: str) -> type[Policy]:
    """The registered policy ``name``; an unknown name fails naming the allowed ones (and the closest)."""
    check_choice("policy", name, POLICIES)
    return POLICIES[name]


def make_policy(config: ControllerConfig) -> Policy:
    return policy_class(config.policy)(config)


__all__ = ["POLICIES", "Policy", "make_policy", "policy_class"]
