"""Controllers and baselines behind one interface (:class:`policies.base.Policy`), by name.

``ppo`` and ``bandit`` learn (SB3 PPO); ``random`` and ``optuna`` search; ``default`` and
``expert`` are fixed schedules. All of them run episodes through the same environments and the
same runner, so the same budget means the same thing for each.
"""

from policies.base import Policy
from policies.fixed import DefaultSchedule, ExpertSchedule
from policies.sb3 import BanditPolicy, PPOPolicy
from policies.search import OptunaTPE, RandomSearch

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (PPOPolicy, BanditPolicy, RandomSearch, OptunaTPE, DefaultSchedule, ExpertSchedule)
}

__all__ = ["POLICIES", "Policy"]
