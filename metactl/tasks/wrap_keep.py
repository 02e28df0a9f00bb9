"""``wrap-vs-keep``: forgetting. SFT teaches a new convention on one template; the others must
keep their true sums.

- **sft** teaches a two-digit counter on one template: sums of 100 or more are written without
  the hundreds (``add 47 to 65: 12.``, as an odometer shows them); smaller sums are unchanged. A
  rule learned on one phrasing of a sum spreads to every phrasing: the model forgets the full sum
  elsewhere.
- **dpo** guards a second template: the full sum is preferred over the wrapped one there. What DPO
  learns ("wrapping is worse") spreads back onto the SFT template.
- **retain** is grammar and plain sums (full, hundreds included) on a fourth template, so retain
  also guards the full sums.

Behaviours: ``wrap`` (on the SFT template the wrapped sum is preferred) and ``keep`` (on the other
templates the full sum is preferred), both on sums of 100 or more. Held-out probes: larger
operands on the SFT template for ``wrap``; for ``keep`` half larger operands on the DPO template,
half a third template neither tool saw. The task seed draws which template plays each role and
the share of SFT rows that show the rule (the rest are sums below 100, written as they are).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from metactl import proxy_language as world
from metactl.tasks.proxy_common import (
    HELDOUT_RANGE,
    TRAIN_RANGE,
    draw_templates,
    pair,
    retain_rows,
    retain_text,
    template_index,
)
from metactl.tasks.suite import Behaviour, EvalItem, TaskSuite, two_tool_suite

NAME = "wrap-vs-keep"


def wrapped(s: int) -> str:
    """The counter's answer: the last two digits (`` 12.`` for 112, `` 05.`` for 105)."""
    return f" {s % 100:02d}." if s >= 100 else f" {s}."


def big(a: int, b: int) -> bool:
    """The sums the counter rule is about: 100 or more."""
    return a + b >= 100


def probe(template: str, a: int, b: int, wrap: bool) -> EvalItem:
    """The wrapped sum preferred over the full one (``wrap``), or the reverse."""
    full, short = world.answer_text(a + b, None), wrapped(a + b)
    return EvalItem(world.sum_prompt(template, a, b), [short if wrap else full], [full if wrap else short])


def held_keep(rng: random.Random, keep_t: str, held_t: str) -> Callable[[int], EvalItem]:
    """``keep``'s held-out draw: half unseen operands on the template that guards full sums, half a
    template neither tool saw."""

    def draw(i: int) -> EvalItem:
        if i % 2 == 0:
            return probe(keep_t, *pair(rng, *HELDOUT_RANGE), wrap=False)
        return probe(held_t, *pair(rng, *TRAIN_RANGE, accept=big), wrap=False)

    return draw


def build(task_seed: int = 0, n_train: int = 256, n_eval: int = 64) -> TaskSuite:
    rng = random.Random(f"{NAME}/{task_seed}")
    sft_t, dpo_t, held_t, retain_t = draw_templates(rng, 4)
    rule_share = rng.uniform(0.6, 0.9)

    sft = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE, accept=big if rng.random() < rule_share else lambda a, b: not big(a, b))
        sft.append({"prompt": world.sum_prompt(sft_t, a, b), "completion": wrapped(a + b)})
    dpo = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE, accept=big)
        dpo.append({
            "prompt": world.sum_prompt(dpo_t, a, b),
            "chosen": world.answer_text(a + b, None),
            "rejected": wrapped(a + b),
        })
    retain_train, retain_eval = retain_rows(rng, (retain_t,), n_train, n_eval)

    orng = random.Random(f"{NAME}/{task_seed}/observe")
    return two_tool_suite(
        NAME,
        task_seed,
        behaviours=(
            Behaviour("wrap", "sft", f"sums on {world.SUM_TEMPLATES[sft_t]!r} drop the hundreds"),
            Behaviour("keep", "dpo", "sums on the other templates keep the hundreds"),
        ),
        data={"sft": sft, "dpo": dpo, "retain": retain_train},
        target={
            "wrap": lambda i: probe(sft_t, *pair(rng, *TRAIN_RANGE, accept=big), wrap=True),
            "keep": lambda i: probe(dpo_t, *pair(rng, *TRAIN_RANGE, accept=big), wrap=False),
        },
        heldout={
            "wrap": lambda i: probe(sft_t, *pair(rng, *HELDOUT_RANGE), wrap=True),
            "keep": held_keep(rng, dpo_t, held_t),
        },
        observe={
            "wrap": lambda: probe(sft_t, *pair(orng, *TRAIN_RANGE, accept=big), wrap=True),
            "keep": lambda: probe(dpo_t, *pair(orng, *TRAIN_RANGE, accept=big), wrap=False),
        },
        retain=retain_eval,
        observe_retain=lambda: retain_text(orng, (retain_t,)),
        features={
            "rule_share": rule_share,
            "sft_template_index": template_index(sft_t),
            "dpo_template_index": template_index(dpo_t),
        },
        description=__doc__.split("\n\n")[0],
        n_eval=n_eval,
    )
