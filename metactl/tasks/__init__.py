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


__all__ = ["SUITES", "Behaviour", "EvalItem", "TaskSuite", "check_suite_name", "load_suite", "register_suite"]
