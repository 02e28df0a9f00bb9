"""The names of the score parts, and which way each is better: one vocabulary for every table.

:class:`metactl.scoring.Scorer` writes, per suite behaviour ``b`` (``style``, ``truth``, ...),
``target/b`` and ``heldout/b`` (probe accuracy), their ``_margin``, the per-split ``target`` and
``heldout`` (behaviours combined), ``kl``, ``stability``, ``cka`` (and ``cka/<layer>``) and
``composite``.
"""

from __future__ import annotations

from collections.abc import Iterable

REWARD_PARTS = ("target", "heldout", "stability")  # what the composite weighs (reward.<part>)
HEADLINE_PARTS = (*REWARD_PARTS, "composite")  # one number per part of the reward, and the reward
LOWER_IS_BETTER = frozenset({"kl"})  # every other part, and the gain over base, is better higher


def behaviour_parts(scores: Iterable[str]) -> list[str]:
    """``target/<b>`` and ``heldout/<b>`` accuracies in ``scores``, in their order (no margins)."""
    keys = list(scores)
    return [k for split in ("target", "heldout") for k in keys
            if k.startswith(f"{split}/") and not k.endswith("_margin")]


def reported_parts(scores: Iterable[str]) -> list[str]:
    """The parts a results table shows: each behaviour per split, then kl, stability, cka, composite."""
    keys = list(scores)
    return [*behaviour_parts(keys), *(k for k in ("kl", "stability", "cka", "composite") if k in keys)]


def sign(part: str) -> float:
    """+1 where higher is better, -1 where lower is (``kl``)."""
    return -1.0 if part in LOWER_IS_BETTER else 1.0


def is_better(part: str, new: float, old: float) -> bool:
    return sign(part) * (new - old) > 0
