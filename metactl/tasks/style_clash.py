"""``style-clash``: two incompatible house styles, one per template.

- **sft** teaches a style word on one template (``add 47 to 25: 72 ok.``). A style learned on
  one phrasing of a sum bleeds onto the others.
- **dpo** prefers, on another template, the answer without that style over the styled one (a
  second team's data: on their template answers stay plain). What DPO learns ("the style word is
  worse") bleeds back onto the SFT template.
- **retain** is grammar and plain sums on the two templates neither tool uses.

Both behaviours live on the same answer position and differ only by template: a schedule must
keep them apart (order, strength, retain), not trade one for the other. Behaviours: ``style``
(the styled answer preferred on the SFT template) and ``plain`` (the plain answer preferred on the
DPO template); the sums are always right. Held-out probes use larger operands on each template
(an unseen template would have no right answer: which house would it belong to?). The task seed
draws the style word and which template each tool gets.
"""

from __future__ import annotations

import random

from metactl import proxy_language as world
from metactl.tasks.proxy_common import (
    HELDOUT_RANGE,
    TRAIN_RANGE,
    draw_templates,
    pair,
    rest_templates,
    retain_rows,
    retain_text,
    template_index,
)
from metactl.tasks.suite import Behaviour, EvalItem, TaskSuite, two_tool_suite

NAME = "style-clash"


def _probe(template: str, a: int, b: int, good: str | None, bad: str | None) -> EvalItem:
    s = a + b
    return EvalItem(world.sum_prompt(template, a, b), [world.answer_text(s, good)], [world.answer_text(s, bad)])


def build(task_seed: int = 0, n_train: int = 256, n_eval: int = 64) -> TaskSuite:
    rng = random.Random(f"{NAME}/{task_seed}")
    word = rng.choice(world.STYLE_WORDS)
    sft_t, dpo_t = draw_templates(rng, 2)

    sft = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE)
        sft.append({"prompt": world.sum_prompt(sft_t, a, b), "completion": world.answer_text(a + b, word)})
    dpo = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE)
        dpo.append({
            "prompt": world.sum_prompt(dpo_t, a, b),
            "chosen": world.answer_text(a + b, None),
            "rejected": world.answer_text(a + b, word),
        })
    retain_t = rest_templates([sft_t, dpo_t])
    retain_train, retain_eval = retain_rows(rng, retain_t, n_train, n_eval)

    def probes(r: random.Random, ops: tuple[int, int]) -> dict:
        return {
            "style": lambda *_: _probe(sft_t, *pair(r, *ops), word, None),
            "plain": lambda *_: _probe(dpo_t, *pair(r, *ops), None, word),
        }

    orng = random.Random(f"{NAME}/{task_seed}/observe")
    return two_tool_suite(
        NAME,
        task_seed,
        behaviours=(
            Behaviour("style", "sft", f"answers to {world.SUM_TEMPLATES[sft_t]!r} end in {word!r}"),
            Behaviour("plain", "dpo", f"answers to {world.SUM_TEMPLATES[dpo_t]!r} stay plain"),
        ),
        data={"sft": sft, "dpo": dpo, "retain": retain_train},
        target=probes(rng, TRAIN_RANGE),
        heldout=probes(rng, HELDOUT_RANGE),
        observe=probes(orng, TRAIN_RANGE),
        retain=retain_eval,
        observe_retain=lambda: retain_text(orng, retain_t),
        features={
            "style_index": world.STYLE_WORDS.index(word) / (len(world.STYLE_WORDS) - 1),
            "sft_template_index": template_index(sft_t),
            "dpo_template_index": template_index(dpo_t),
        },
        description=__doc__.split("\n\n")[0],
        n_eval=n_eval,
    )
