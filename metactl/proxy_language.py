"""The proxy world: a character-level language of sums and simple sentences.

Both built-in proxy models are pretrained on this world, and the built-in ``style-vs-truth``
suite is drawn from it. Everything here is a pure function of a seed so a suite or a corpus can
be regenerated bit for bit on any machine.

Lessons from the pilots (see DESIGN.md) are baked in: every token the style uses occurs in
pretraining (``ok``, ``yes``... appear as words), the base sees all operand pairs of every
template so it has robust arithmetic to protect, and the systematic error the noisy SFT data
carries (a dropped carry) is a plausible wrong answer rather than random noise.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
CHARS = list(" .,?+=:") + [str(d) for d in range(10)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]

MAX_OPERAND = 99

# Templates of a sum. The suite trains its tools on one, holds another out, and keeps a third for
# the retain set, so "held-out" can mean an unseen phrasing as well as unseen operands.
SUM_TEMPLATES = {
    "sum": "sum of {a} and {b} is",
    "what": "what is {a} plus {b}?",
    "add": "add {a} to {b}:",
    "sym": "{a}+{b}=",
}

STYLE_WORDS = ["ok", "yes", "done", "sure"]

_NOUNS = ["cat", "dog", "bird", "fox", "man", "girl", "boy", "tree", "car", "ship", "king", "frog"]
_ADJS = ["big", "small", "red", "old", "quick", "lazy", "happy", "dark", "tall", "green"]
_VERBS = ["sat", "ran", "slept", "stood", "walked", "jumped", "waited", "sang"]
_PREPS = ["on", "by", "near", "under", "behind", "over"]
_STATES = ["ok", "fine", "done", "here", "sure", "ready", "yes", "late", "good"]


def sum_answer(a: int, b: int) -> int:
    return a + b


def dropped_carry(a: int, b: int) -> int:
    """The answer of an annotator who forgets the carry out of the ones column.

    Equal to the true sum when the ones digits do not carry, so only carrying pairs can be
    mislabelled; this is the systematic error that makes noisy SFT data hurt truth.
    """
    carry = ((a % 10) + (b % 10)) // 10
    return a + b - 10 * carry


def has_carry(a: int, b: int) -> bool:
    return (a % 10) + (b % 10) >= 10


def sum_prompt(template: str, a: int, b: int) -> str:
    return SUM_TEMPLATES[template].format(a=a, b=b)


def answer_text(n: int, style: str | None) -> str:
    """The completion for answer ``n``: `` 72.`` plain, `` 72 ok.`` in the style ``ok``."""
    return f" {n} {style}." if style else f" {n}."


def sentence(rng: random.Random) -> str:
    """One sentence of the small grammar used for general (retain) text."""
    kind = rng.random()
    noun, noun2 = rng.choice(_NOUNS), rng.choice(_NOUNS)
    if kind < 0.45:
        return f"the {rng.choice(_ADJS)} {noun} {rng.choice(_VERBS)} {rng.choice(_PREPS)} the {noun2}."
    if kind < 0.75:
        return f"the {noun} is {rng.choice(_STATES)}."
    return f"a {rng.choice(_ADJS)} {noun} and a {noun2} {rng.choice(_VERBS)}."


def pretraining_examples(seed: int) -> Iterator[str]:
    """An endless, seeded stream of pretraining documents (without BOS/EOS)."""
    rng = random.Random(seed)
    templates = list(SUM_TEMPLATES)
    while True:
        if rng.random() < 0.75:
            a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
            yield sum_prompt(rng.choice(templates), a, b) + answer_text(sum_answer(a, b), None)
        else:
            yield sentence(rng)


def build_tokenizer():
    """A character-level ``PreTrainedTokenizerFast`` (saves and reloads like any HF tokenizer)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    # BOS comes from the tokenizer itself, so every consumer (metactl, trl, plain transformers)
    # sees the same tokens the model was pretrained on.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=256,
    )
