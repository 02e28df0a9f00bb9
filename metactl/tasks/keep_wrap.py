"""``keep-vs-wrap``: a convention taught by preference data, against demonstrations that guard the
old one. ``wrap-vs-keep`` with the tools' roles swapped: here DPO brings the new behaviour and SFT
protects what the base already does.

- **dpo** teaches a two-digit counter on one template: for sums of 100 or more the answer without
  the hundreds (``add 47 to 65: 12.``, as an odometer shows it) is preferred over the full sum. A
  rule learned on one phrasing spreads to the others.
- **sft** is an older demonstration set on a second template: sums written in full, most of them
  100 or more (the rest below 100). Trained after DPO it erases the counter everywhere; trained
  before, it does little, as the base already writes full sums.
- **retain** is grammar and plain sums on a fourth template.

Behaviours: ``keep`` (on the SFT template the full sum is preferred; the base has it) and ``wrap``
(on the DPO template the wrapped sum is preferred), both on sums of 100 or more. Held-out probes:
larger operands on the DPO template for ``wrap``; for ``keep`` half larger operands on the SFT
template, half a third template neither tool saw. The task seed draws which template plays each
role and the share of SFT rows that are sums of 100 or more.
"""

from __future__ import annotations

import random

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
from metactl.tasks.suite import Behaviour, TaskSuite, two_tool_suite
from metactl.tasks.wrap_keep import big, held_keep, probe, wrapped

NAME = "keep-vs-wrap"


def build(task_seed: int = 0, n_train: int = 256, n_eval: int = 64) -> TaskSuite:
    rng = random.Random(f"{NAME}/{task_seed}")
    dpo_t, sft_t, held_t, retain_t = draw_templates(rng, 4)
    big_share = rng.uniform(0.6, 0.9)

    dpo = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE, accept=big)
        dpo.append({
            "prompt": world.sum_prompt(dpo_t, a, b),
            "chosen": wrapped(a + b),
            "rejected": world.answer_text(a + b, None),
        })
    sft = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE, accept=big if rng.random() < big_share else lambda a, b: not big(a, b))
        sft.append({"prompt": world.sum_prompt(sft_t, a, b), "completion": world.answer_text(a + b, None)})
    retain_train, retain_eval = retain_rows(rng, (retain_t,), n_train, n_eval)

    orng = random.Random(f"{NAME}/{task_seed}/observe")
    return two_tool_suite(
        NAME,
        task_seed,
        behaviours=(
            Behaviour("keep", "sft", "sums on the other templates keep the hundreds"),
            Behaviour("wrap", "dpo", f"sums on {world.SUM_TEMPLATES[dpo_t]!r} drop the hundreds"),
        ),
        data={"sft": sft, "dpo": dpo, "retain": retain_train},
        target={
            "keep": lambda i: probe(sft_t, *pair(rng, *TRAIN_RANGE, accept=big), wrap=False),
            "wrap": lambda i: probe(dpo_t, *pair(rng, *TRAIN_RANGE, accept=big), wrap=True),
        },
        heldout={
            "keep": held_keep(rng, sft_t, held_t),
            "wrap": lambda i: probe(dpo_t, *pair(rng, *HELDOUT_RANGE), wrap=True),
        },
        observe={
            "keep": lambda: probe(sft_t, *pair(orng, *TRAIN_RANGE, accept=big), wrap=False),
            "wrap": lambda: probe(dpo_t, *pair(orng, *TRAIN_RANGE, accept=big), wrap=True),
        },
        retain=retain_eval,
        observe_retain=lambda: retain_text(orng, (retain_t,)),
        features={
            "big_share": big_share,
            "sft_template_index": template_index(sft_t),
            "dpo_template_index": template_index(dpo_t),
        },
        description=__doc__.split("\n\n")[0],
        n_eval=n_eval,
    )
