"""Settings of the environments (what an episode is), validated before any weights load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from metactl.errors import ConfigError, check_number

if TYPE_CHECKING:
    from metactl.schedule import Schedule


@dataclass
class EnvConfig:
    phases: int = field(default=4, metadata={"help": "phases per episode (phase env: env steps per episode)"})
    train_task_seeds: list[int] = field(
        default_factory=lambda: [0, 16],
        metadata={"help": "[first, end) range episodes draw task seeds from; evaluation uses seeds outside it"},
    )
    quick_probes: int = field(
        default=16,
        metadata={"help": "probes per set for the scores observed between phases (0 = all); the final score always uses all"},
    )
    interference_rows: int = field(default=8, metadata={"help": "rows per tool for the gradient-cosine (interference) reading"})
    prior: str = field(
        default="default",
        metadata={"help": "schedule the zero action reproduces (policies act residually around it): a built-in name, a YAML path, or 'neutral'"},
    )
    diverged_penalty: float = field(
        default=1.0, metadata={"help": "an episode whose loss or score turns NaN ends with return -penalty"}
    )

    def __post_init__(self) -> None:
        self.phases = int(check_number("env.phases", self.phases, low=1, high=64, integer=True))
        seeds = self.train_task_seeds
        if not (isinstance(seeds, (list, tuple)) and len(seeds) == 2):
            raise ConfigError(f"env.train_task_seeds: expected [first, end), e.g. [0, 16]; got {seeds!r}.")
        lo = int(check_number("env.train_task_seeds[0]", seeds[0], low=0, integer=True))
        hi = int(check_number("env.train_task_seeds[1]", seeds[1], low=0, integer=True))
        if hi <= lo:
            raise ConfigError(f"env.train_task_seeds: got [{lo}, {hi}); the end must be above the first seed, e.g. [{lo}, {lo + 16}].")
        self.train_task_seeds = [lo, hi]
        self.quick_probes = int(check_number("env.quick_probes", self.quick_probes, low=0, high=10**6, integer=True))
        self.interference_rows = int(check_number("env.interference_rows", self.interference_rows, low=1, high=4096, integer=True))
        if self.prior != "neutral":
            from metactl.paths import resolve_schedule_path

            resolve_schedule_path(self.prior)  # fails here, before any weights load, with the built-in names
        self.diverged_penalty = check_number("env.diverged_penalty", self.diverged_penalty, low=0.0)

    def prior_schedule(self, groups: int) -> Schedule | None:
        if self.prior == "neutral":
            return None
        from metactl.paths import resolve_schedule_path
        from metactl.schedule import Schedule

        return Schedule.load(resolve_schedule_path(self.prior)).regroup(groups)

    def is_training_seed(self, task_seed: int) -> bool:
        return self.train_task_seeds[0] <= task_seed < self.train_task_seeds[1]
