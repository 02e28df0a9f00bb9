"""Rewards for the online RL tool (``grpo``), by name: what a sampled completion earns.

A suite chooses one in ``suite.yaml`` (``rewards: {grpo: {name: contains, field: answer}}``); no
reward is user code, so a suite folder runs nothing on load. Each reward compares the completion
with a reference: a column of the row it was sampled for (``field``, e.g. the reference answer of
TRL's prompt-only rows) or one fixed string of the spec (``value``, e.g. a style marker).

- ``exact``: 1 when the completion, stripped of spaces and a final ``.``, equals the reference.
- ``contains``: 1 when the reference occurs in the completion.
- ``regex``: 1 when the pattern (the reference) matches somewhere in the completion.
- ``first-number``: 1 when the first integer in the completion equals the reference (a sum's
  answer, whatever style is wrapped around it).
- ``first-word``: 1 when the first word of the completion (letters only, case kept) equals the
  reference (an English answer such as a past tense, whatever follows it; ``contains`` would also
  reward a wrong answer followed by a phrase holding the right word).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from metactl.errors import ConfigError, DataError, did_you_mean

_NUMBER = re.compile(r"-?\d+")
_WORD = re.compile(r"[^\W\d_]+")


def _exact(completion: str, ref: str) -> float:
    return float(completion.strip().removesuffix(".").strip() == ref.strip())


def _contains(completion: str, ref: str) -> float:
    return float(ref in completion)


def _regex(completion: str, ref: str) -> float:
    return float(re.search(ref, completion) is not None)


def _first_number(completion: str, ref: str) -> float:
    found = _NUMBER.search(completion)
    return float(found is not None and int(found.group()) == int(ref))


def _first_word(completion: str, ref: str) -> float:
    found = _WORD.search(completion)
    return float(found is not None and found.group() == ref.strip())


REWARDS: dict[str, Callable[[str, str], float]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "first-number": _first_number,
    "first-word": _first_word,
}


@dataclass(frozen=True)
class RewardSpec:
    """A reward by name, and where its reference comes from: the row's ``field`` or a fixed ``value``."""

    name: str
    field: str | None = None
    value: str | None = None

    @classmethod
    def parse(cls, raw: object, where: str) -> RewardSpec:
        """The spec ``raw`` (a mapping from YAML) checked; ``where`` names it in errors."""
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping such as {{name: contains, field: answer}}, got {raw!r}."
            )
        unknown = [k for k in raw if k not in ("name", "field", "value")]
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}; allowed: name, field, value."
                f"{did_you_mean(str(unknown[0]), ('name', 'field', 'value'))}"
            )
        spec = cls(raw.get("name"), raw.get("field"), raw.get("value"))  # type: ignore[arg-type]  # checked next
        spec.check(where)
        return spec

    def check(self, where: str) -> None:
        if not isinstance(self.name, str) or self.name not in REWARDS:
            raise ConfigError(
                f"{where}.name: unknown reward {self.name!r}; allowed: {', '.join(REWARDS)}."
                f"{did_you_mean(str(self.name), REWARDS)}"
            )
        if (self.field is None) == (self.value is None):
            raise ConfigError(
                f"{where}: give exactly one of field (a column of each row holding the reference, e.g. answer) "
                f"or value (one fixed reference string); got field={self.field!r}, value={self.value!r}."
            )
        for key in ("field", "value"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"{where}.{key}: expected a non-empty string, got {v!r}.")
        if self.name == "first-number" and self.value is not None and not _NUMBER.fullmatch(self.value.strip()):
            raise ConfigError(f"{where}.value: reward 'first-number' compares integers; got {self.value!r}.")
        if self.name == "regex" and self.value is not None:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ConfigError(f"{where}.value: {self.value!r} is not a valid regular expression ({exc}).") from exc

    def check_rows(self, rows: list[dict], where: str) -> None:
        """Every row carries the reference this spec reads (before any weights load)."""
        if self.field is None:
            return
        for i, row in enumerate(rows, start=1):  # i: the row's place among the file's rows (blank lines skipped)
            ref = row.get(self.field)
            if not isinstance(ref, (str, int)) or isinstance(ref, bool) or str(ref) == "":
                raise DataError(
                    f"{where}, row {i}: reward {self.name!r} reads the reference from field {self.field!r}, "
                    f"which this row lacks or leaves empty (got {ref!r}); add it to every row."
                )
            if self.name == "first-number" and not _NUMBER.fullmatch(str(ref).strip()):
                raise DataError(
                    f"{where}, row {i}: reward 'first-number' needs an integer in {self.field!r}, got {ref!r}."
                )
            if self.name == "regex":
                try:
                    re.compile(str(ref))
                except re.error as exc:
                    raise DataError(
                        f"{where}, row {i}: {self.field!r} is not a valid regular expression ({exc})."
                    ) from exc

    def reference(self, row: Mapping) -> str:
        return str(row[self.field]) if self.field is not None else str(self.value)

    def __call__(self, completion: str, row: Mapping) -> float:
        return REWARDS[self.name](completion, self.reference(row))

    def to_dict(self) -> dict:
        out = {"name": self.name}
        if self.field is not None:
            out["field"] = self.field
        if self.value is not None:
            out["value"] = self.value
        return out
