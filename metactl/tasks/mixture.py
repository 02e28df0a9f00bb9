"""Suites made of several task families: one task seed of the mixture is one family's task.

A controller that must generalise is trained on many families at once. Rather than teach every
part of metactl (envs, population, jobs, run dirs) a second task coordinate, a mixture is a suite
name like any other: ``style-vs-truth+format-vs-truth`` (or a built-in alias such as
``train-families``), whose task seed ``s`` is task ``s // n`` of member ``s % n`` (``n`` members).
Seeds ``[0, 16)`` of a 4-member mixture are tasks 0-3 of each member; held-out seeds ``1000+``
are member tasks 250 and up, which no training seed reaches.
"""

from __future__ import annotations

SEPARATOR = "+"

# Built-in mixtures by name, filled in by the family registry (metactl.tasks).
ALIASES: dict[str, list[str]] = {}


def members(name: str) -> list[str] | None:
    """The member suites of mixture ``name``, or None when ``name`` is a single suite."""
    if name in ALIASES:
        return list(ALIASES[name])
    if SEPARATOR in name:
        return [part.strip() for part in name.split(SEPARATOR)]
    return None


def member_task(names: list[str], task_seed: int) -> tuple[str, int]:
    """The (member suite, its own task seed) that task ``task_seed`` of the mixture is."""
    return names[task_seed % len(names)], task_seed // len(names)


def family(suite: str, task_seed: int) -> str:
    """The task family task ``task_seed`` of ``suite`` belongs to: its member suite in a mixture, else ``suite``."""
    names = members(suite)
    return member_task(names, task_seed)[0] if names else suite
