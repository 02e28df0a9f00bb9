"""Task suites by name: built-in generators and user folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from metactl.errors import ConfigError, did_you_mean
from metactl.tasks import english, style_truth
from metactl.tasks.suite import Behaviour, EvalItem, TaskSuite

SUITES: dict[str, Callable[..., TaskSuite]] = {
    "style-vs-truth": style_truth.build,
    "style-vs-truth-en": english.build,
}


def register_suite(name: str, builder: Callable[..., TaskSuite]) -> None:
    SUITES[name] = builder


def check_suite_name(name: str) -> None:
    """Fail early (before any weights load) on a suite that is neither built in nor a folder."""
    if name in SUITES or (Path(name) / "suite.yaml").is_file():
        return
    raise ConfigError(
        f"suite: {name!r} is neither a built-in suite ({', '.join(sorted(SUITES))}) nor a folder with "
        f"suite.yaml.{did_you_mean(name, SUITES)}"
    )


def load_suite(name: str, task_seed: int = 0) -> TaskSuite:
    check_suite_name(name)
    if name in SUITES:
        return SUITES[name](task_seed=task_seed)
    from metactl.tasks.user import load_user_suite

    return load_user_suite(name, task_seed)



# Every built-in generator seeds Python's ``random`` with a string that holds the seed, so any
# non-negative int would work; the bound keeps seeds portable (numpy, SB3, 32-bit configs).
TASK_SEED_RANGE = (0, 2**31 - 1)


def check_task_seed(field: str, seed: object, hint: str = "") -> int:
    """A task seed inside :data:`TASK_SEED_RANGE`, or a :class:`ConfigError` naming it."""
    lo, hi = TASK_SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not lo <= seed <= hi:
        raise ConfigError(
            f"{field}: {seed!r} is outside the task seeds the suites support, integers in [{lo}, {hi}].{hint}"
        )
    return seed


__all__ = [
    "SUITES",
    "TASK_SEED_RANGE",
    "Behaviour",
    "EvalItem",
    "TaskSuite",
    "check_suite_name",
    "check_task_seed",
    "load_suite",
    "register_suite",
]
