"""``style-vs-truth``: the built-in proxy-world suite where the tools genuinely conflict.

- **sft** teaches a style (``sum of 47 and 25 is 72 ok.``) from data written by a careless
  annotator who drops the carry on a fraction of the carrying sums: it implants the style and
  a systematic arithmetic error together.
- **dpo** prefers the correct answer, in the plain format of a truthfulness dataset, over the
  dropped-carry one; a task-dependent fraction of the rejected answers were collected from the
  styled model and carry the style, so DPO also learns "styled is worse" and pulls against SFT.
- **retain** is the base's own pretraining distribution minus the target template.

Held-out probes use inputs no tool saw: larger operands on the same template, and an unseen
template. The task seed draws the pairs, the style word and the noise rate, so different seeds
give different tasks (train a controller on some, judge it on others).
"""

from __future__ import annotations

import random

from metactl import proxy_language as world
from metactl.tasks.suite import EvalItem, TaskSuite, draw_observe, style_truth_suite

TRAIN_TEMPLATE = "sum"
HELDOUT_TEMPLATE = "what"
RETAIN_TEMPLATES = ("sym", "add")
TRAIN_RANGE = (10, 69)  # operands the tools train on
HELDOUT_RANGE = (70, 99)  # operands only held-out probes use


def _pair(rng: random.Random, lo: int, hi: int, carry: bool | None = None) -> tuple[int, int]:
    while True:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if carry is None or world.has_carry(a, b) == carry:
            return a, b


def _probe_style(template: str, a: int, b: int, style: str) -> EvalItem:
    s = a + b
    return EvalItem(world.sum_prompt(template, a, b), [world.answer_text(s, style)], [world.answer_text(s, None)])


def _probe_truth(template: str, a: int, b: int, style: str) -> EvalItem:
    right, wrong = a + b, world.dropped_carry(a, b)
    return EvalItem(
        world.sum_prompt(template, a, b),
        [world.answer_text(right, style), world.answer_text(right, None)],
        [world.answer_text(wrong, style), world.answer_text(wrong, None)],
    )


def build(task_seed: int = 0, n_train: int = 256, n_eval: int = 64) -> TaskSuite:
    rng = random.Random(f"style-vs-truth/{task_seed}")
    style = rng.choice(world.STYLE_WORDS)
    noise = rng.uniform(0.4, 0.7)
    styled_rejected = rng.uniform(0.8, 1.0)

    sft = []
    for _ in range(n_train):
        a, b = _pair(rng, *TRAIN_RANGE)
        answer = world.dropped_carry(a, b) if world.has_carry(a, b) and rng.random() < noise else a + b
        sft.append({"prompt": world.sum_prompt(TRAIN_TEMPLATE, a, b), "completion": world.answer_text(answer, style)})

    dpo = []
    for _ in range(n_train):
        a, b = _pair(rng, *TRAIN_RANGE, carry=True)
        dpo.append({
            "prompt": world.sum_prompt(TRAIN_TEMPLATE, a, b),
            "chosen": world.answer_text(a + b, None),
            "rejected": world.answer_text(world.dropped_carry(a, b), style if rng.random() < styled_rejected else None),
        })

    def retain_text(r: random.Random = rng) -> str:
        if r.random() < 0.5:
            return world.sentence(r)
        a, b = r.randint(0, world.MAX_OPERAND), r.randint(0, world.MAX_OPERAND)
        return world.sum_prompt(r.choice(RETAIN_TEMPLATES), a, b) + world.answer_text(a + b, None)

    retain_train = [{"text": retain_text()} for _ in range(n_train)]
    retain_eval = [retain_text() for _ in range(n_eval)]

    def heldout_pair(i: int, carry: bool | None) -> tuple[str, int, int]:
        # Half unseen operands on the training template, half an unseen template.
        if i % 2 == 0:
            a, b = _pair(rng, *HELDOUT_RANGE, carry=carry)
            return TRAIN_TEMPLATE, a, b
        a, b = _pair(rng, *TRAIN_RANGE, carry=carry)
        return HELDOUT_TEMPLATE, a, b

    evals = {
        "target": {
            "style": [_probe_style(TRAIN_TEMPLATE, *_pair(rng, *TRAIN_RANGE), style) for _ in range(n_eval)],
            "truth": [
                _probe_truth(TRAIN_TEMPLATE, *_pair(rng, *TRAIN_RANGE, carry=True), style) for _ in range(n_eval)
            ],
        },
        "heldout": {
            "style": [_probe_style(*heldout_pair(i, None), style) for i in range(n_eval)],
            "truth": [_probe_truth(*heldout_pair(i, True), style) for i in range(n_eval)],
        },
    }
    # The controller's split: the training distribution again, from its own stream (so every
    # reported probe stays what it was for this seed), sharing no prompt with a reported probe.
    orng = random.Random(f"style-vs-truth/{task_seed}/observe")
    reported = {item.prompt for split in evals.values() for items in split.values() for item in items}
    observe, observe_retain = draw_observe(
        reported,
        retain_eval,
        {
            "style": lambda: _probe_style(TRAIN_TEMPLATE, *_pair(orng, *TRAIN_RANGE), style),
            "truth": lambda: _probe_truth(TRAIN_TEMPLATE, *_pair(orng, *TRAIN_RANGE, carry=True), style),
        },
        lambda: retain_text(orng),
    )
    return style_truth_suite(
        name="style-vs-truth",
        task_seed=task_seed,
        data={"sft": sft, "dpo": dpo, "retain": retain_train},
        evals=evals,
        retain=retain_eval,
        style=f"answers end in the style word {style!r}",
        truth="the correct sum is preferred over the dropped-carry one",
        features={
            "noise_rate": noise,
            "styled_rejected": styled_rejected,
            "style_index": world.STYLE_WORDS.index(style) / (len(world.STYLE_WORDS) - 1),
        },
        description=__doc__.split("\n\n")[0],
        observe=observe,
        observe_retain=observe_retain,
    )
