"""Pieces the proxy-world families share: operand pairs, answer forms, retain text.

Every family draws its tools' rows on training operands (10-69) and holds larger ones (70-99)
out, as ``style-vs-truth`` does; the retain split is grammar sentences and plain sums on templates
no tool of the family trains on (DESIGN.md: a retain set holding the target template mostly
penalises the behaviour the tools were asked for).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from metactl import proxy_language as world

TRAIN_RANGE = (10, 69)  # operands the tools train on
HELDOUT_RANGE = (70, 99)  # operands only held-out probes use


def pair(
    rng: random.Random,
    lo: int,
    hi: int,
    *,
    carry: bool | None = None,
    accept: Callable[[int, int], bool] | None = None,
) -> tuple[int, int]:
    """Operands in ``[lo, hi]``, with a carry out of the ones column or without (``carry``) and
    passing ``accept`` when given."""
    while True:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if (carry is None or world.has_carry(a, b) == carry) and (accept is None or accept(a, b)):
            return a, b


def prefixed(n: int, word: str | None) -> str:
    """An answer with a word before the number (`` sure 72.``), or plain (`` 72.``)."""
    return f" {word} {n}." if word else f" {n}."


def retain_text(rng: random.Random, templates: tuple[str, ...]) -> str:
    """Half grammar sentences, half plain correct sums on ``templates`` (the base's own text)."""
    if not templates or rng.random() < 0.5:
        return world.sentence(rng)
    a, b = rng.randint(0, world.MAX_OPERAND), rng.randint(0, world.MAX_OPERAND)
    return world.sum_prompt(rng.choice(templates), a, b) + world.answer_text(a + b, None)


def retain_rows(rng: random.Random, templates: tuple[str, ...], n_train: int, n_eval: int) -> tuple[list, list]:
    """(retain tool rows, reported retain texts)."""
    rows = [{"text": retain_text(rng, templates)} for _ in range(n_train)]
    return rows, [retain_text(rng, templates) for _ in range(n_eval)]


def draw_templates(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct sum templates in a seed-dependent order (which one each role gets)."""
    return rng.sample(sorted(world.SUM_TEMPLATES), k)


def rest_templates(used: list[str]) -> tuple[str, ...]:
    return tuple(t for t in sorted(world.SUM_TEMPLATES) if t not in used)


def template_index(template: str) -> float:
    """A template as a number in [0, 1] (for a suite's descriptive features)."""
    names = sorted(world.SUM_TEMPLATES)
    return names.index(template) / (len(names) - 1)
