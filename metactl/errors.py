"""User-facing errors: every message names the field, the value, what is allowed and a fix."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class MetactlError(Exception):
    """Base class of errors caused by user input (the CLI prints them without a traceback)."""


class ConfigError(MetactlError, ValueError):
    """A config, schedule or suite value is invalid."""


class DataError(MetactlError, ValueError):
    """A data file is malformed (the message names the file and line)."""


class DivergedRun(MetactlError):
    """A method's run went non-finite (NaN/inf loss or score): the message names which and the fix."""

    def __init__(self, label: str, task_seed: int, episode_seed: int, error: str) -> None:
        super().__init__(
            f"{label or 'the run'} on task {task_seed} (episode seed {episode_seed}) diverged: {error}. Lower the "
            "tools' learning rates (--set run.tools.<tool>.lr=...), or the schedule's train multipliers."
        )

    @classmethod
    def from_message(cls, message: str) -> DivergedRun:
        """The same error again in another process, from its message."""
        exc = cls.__new__(cls)
        MetactlError.__init__(exc, message)
        return exc

    def __reduce__(self) -> tuple:  # pickles (Ray, subprocesses) by its message
        return (type(self).from_message, (str(self),))


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(field: str, value: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    if value not in choices:
        raise ConfigError(
            f"{field}: unknown value {value!r}; allowed: {', '.join(choices)}.{did_you_mean(value, choices)}"
        )
    return value


def check_number(
    field: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> float:
    """Validate a number is finite and inside [low, high] (or (low, high] when ``low_open``)."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, str):
        # PyYAML reads exponent floats without a dot ("1e-4") as strings (YAML 1.1); accept them.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise ConfigError(f"{field}: expected {kind}, got {value!r}.")
    if not math.isfinite(value):
        raise ConfigError(f"{field}: got {value!r}; it must be a finite number.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        bracket = "(" if low_open else "["
        raise ConfigError(f"{field}: got {value!r}; allowed range is {bracket}{lo}, {hi}].")
    return int(value) if integer else float(value)
