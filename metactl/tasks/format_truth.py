"""``format-vs-truth``: SFT teaches an answer format, DPO prefers correct answers.

- **sft** teaches a format: a word before the number (``sum of 47 and 25 is sure 72.``). The
  pilots found that a prefix (unlike ``style-vs-truth``'s suffix) moves the answer to a position
  the base never computed a sum at, so the format alone erodes the arithmetic; the annotator
  also drops the carry on a task-dependent share of the carrying sums.
- **dpo** prefers the correct sum in the plain format of a truthfulness dataset over the
  dropped-carry one; a task-dependent share of the rejected answers were collected from the
  formatted model and carry the prefix, so DPO also learns "the prefix is worse".
- **retain** is grammar and plain sums on the two templates neither tool trains on nor a probe
  asks.

Behaviours: ``format`` (the prefixed answer preferred over the plain one, the sum being right)
and ``correct`` (the right sum over the dropped-carry one, both forms summed). Held-out probes:
half larger operands on the training template, half the held-out template. The task seed draws
the prefix word, the two templates, the noise and the prefixed share of rejected answers.
"""

from __future__ import annotations

import random

from metactl import proxy_language as world
from metactl.tasks.proxy_common import (
    HELDOUT_RANGE,
    TRAIN_RANGE,
    pair,
    prefixed,
    rest_templates,
    retain_rows,
    retain_text,
)
from metactl.tasks.suite import Behaviour, EvalItem, TaskSuite, two_tool_suite

NAME = "format-vs-truth"
PREFIXES = ("sure", "ok", "yes", "fine")  # words the base read in pretraining, so their embeddings are trained
TEMPLATES = ("sum", "what", "add")  # "a+b=" has no words around the answer for a prefix to sit in


def _probe_format(template: str, a: int, b: int, word: str) -> EvalItem:
    s = a + b
    return EvalItem(world.sum_prompt(template, a, b), [prefixed(s, word)], [prefixed(s, None)])


def _probe_correct(template: str, a: int, b: int, word: str) -> EvalItem:
    right, wrong = a + b, world.dropped_carry(a, b)
    return EvalItem(
        world.sum_prompt(template, a, b),
        [prefixed(right, word), prefixed(right, None)],
        [prefixed(wrong, word), prefixed(wrong, None)],
    )


def build(task_seed: int = 0, n_train: int = 256, n_eval: int = 64) -> TaskSuite:
    rng = random.Random(f"{NAME}/{task_seed}")
    word = rng.choice(PREFIXES)
    train_t, held_t = rng.sample(TEMPLATES, 2)
    noise = rng.uniform(0.2, 0.5)
    prefixed_rejected = rng.uniform(0.5, 1.0)

    sft = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE)
        answer = world.dropped_carry(a, b) if world.has_carry(a, b) and rng.random() < noise else a + b
        sft.append({"prompt": world.sum_prompt(train_t, a, b), "completion": prefixed(answer, word)})
    dpo = []
    for _ in range(n_train):
        a, b = pair(rng, *TRAIN_RANGE, carry=True)
        wrong = prefixed(world.dropped_carry(a, b), word if rng.random() < prefixed_rejected else None)
        dpo.append({"prompt": world.sum_prompt(train_t, a, b), "chosen": prefixed(a + b, None), "rejected": wrong})
    retain_t = rest_templates([train_t, held_t])
    retain_train, retain_eval = retain_rows(rng, retain_t, n_train, n_eval)

    def held(i: int, carry: bool | None) -> tuple[str, int, int]:
        # Half unseen operands on the training template, half the unseen template.
        if i % 2 == 0:
            return (train_t, *pair(rng, *HELDOUT_RANGE, carry=carry))
        return (held_t, *pair(rng, *TRAIN_RANGE, carry=carry))

    orng = random.Random(f"{NAME}/{task_seed}/observe")
    return two_tool_suite(
        NAME,
        task_seed,
        behaviours=(
            Behaviour("format", "sft", f"the answer is written after the word {word!r}"),
            Behaviour("correct", "dpo", "the correct sum is preferred over the dropped-carry one"),
        ),
        data={"sft": sft, "dpo": dpo, "retain": retain_train},
        target={
            "format": lambda i: _probe_format(train_t, *pair(rng, *TRAIN_RANGE), word),
            "correct": lambda i: _probe_correct(train_t, *pair(rng, *TRAIN_RANGE, carry=True), word),
        },
        heldout={
            "format": lambda i: _probe_format(*held(i, None), word),
            "correct": lambda i: _probe_correct(*held(i, True), word),
        },
        observe={
            "format": lambda: _probe_format(train_t, *pair(orng, *TRAIN_RANGE), word),
            "correct": lambda: _probe_correct(train_t, *pair(orng, *TRAIN_RANGE, carry=True), word),
        },
        retain=retain_eval,
        observe_retain=lambda: retain_text(orng, retain_t),
        features={
            "noise_rate": noise,
            "prefixed_rejected": prefixed_rejected,
            "prefix_index": PREFIXES.index(word) / (len(PREFIXES) - 1),
            "template_index": TEMPLATES.index(train_t) / (len(TEMPLATES) - 1),
        },
        description=__doc__.split("\n\n")[0],
        n_eval=n_eval,
    )
