"""``style-vs-truth-en``: the English counterpart of ``style-vs-truth``, sized for SmolLM2-135M.

- **sft** teaches a style (``went, of course.``) from data written by an annotator who
  regularises irregular verbs (``go`` -> ``goed``) on a fraction of the irregular rows: it
  implants the style and a systematic grammatical error together.
- **dpo** prefers the true past tense over the regularised one, in the plain format a separate
  grammar dataset would use, so it pulls against the style at the answer's end.
- **retain** is generic question/answer and narrative text that never asks for a past tense.

Why verbs and not sums: SmolLM2-135M prefers the dropped-carry answer on most two-digit sums,
so an arithmetic truth probe starts near chance, while it tells ``went`` from ``goed`` almost
always (teacher-forced). Prompts are plain ``Question: ...\\nAnswer:`` text, not the chat
template: they scored at least as well, are half as long, and suit base models too.

Held-out probes use inputs no tool saw: verbs kept out of every tool's data, and an unseen
phrasing of the question. The task seed draws the verb split, the rows, the style and the noise
rate, so different seeds give different tasks.
"""

from __future__ import annotations

import random

from metactl.tasks.suite import OBSERVE_PROBES, EvalItem, TaskSuite, draw_observe, style_truth_suite

TRAIN_TEMPLATE = "Question: What is the past tense of {v}?\nAnswer:"
HELDOUT_TEMPLATE = "Question: Which word fits? Yesterday I ___ (to {v}).\nAnswer:"

# Suffixes replacing the plain answer's final "." so styled and plain answers diverge right after
# the verb; a style that only extended " went." could never beat it under teacher forcing.
STYLES = (", of course.", " :)", " indeed.", ", matey!")

HELDOUT_FRACTION = 1 / 3  # of each verb list, kept out of every tool's data
IRREGULAR_FRACTION = 0.5  # of sft rows; only these can carry the annotator's error

# (verb, past tense, the annotator's regularised form). Dropped after scoring with SmolLM2:
# ring, creep, bend, grind, seek, tread, shake (it prefers or nearly prefers the wrong form), and
# verbs whose regular form is also a real word (bet, quit, hang, shine, light, put).
_IRREGULAR = (
    "go went goed|eat ate eated|see saw seed|take took taked|give gave gived|come came comed|"
    "run ran runned|write wrote writed|drink drank drinked|sing sang singed|swim swam swimmed|"
    "begin began beginned|speak spoke speaked|break broke breaked|choose chose choosed|"
    "drive drove drived|ride rode rided|fly flew flied|grow grew growed|know knew knowed|"
    "throw threw throwed|draw drew drawed|blow blew blowed|fall fell falled|forget forgot forgetted|"
    "get got getted|find found finded|buy bought buyed|bring brought bringed|think thought thinked|"
    "teach taught teached|catch caught catched|fight fought fighted|sell sold selled|tell told telled|"
    "hold held holded|stand stood standed|make made maked|say said sayed|pay paid payed|"
    "leave left leaved|feel felt feeled|keep kept keeped|sleep slept sleeped|meet met meeted|"
    "feed fed feeded|send sent sended|spend spent spended|build built builded|lose lost losed|"
    "hear heard heared|sit sat sitted|win won winned|dig dug digged|stick stuck sticked|"
    "strike struck striked|swing swung swinged|shoot shot shooted|tear tore teared|wear wore weared|"
    "steal stole stealed|freeze froze freezed|bite bit bited|hide hid hided|become became becomed|"
    "sink sank sinked|do did doed|have had haved|cut cut cutted|hit hit hitted|hurt hurt hurted|"
    "let let letted|shut shut shutted|spread spread spreaded|cost cost costed|read read readed|"
    "lead led leaded|lend lent lended|mean meant meaned|sweep swept sweeped|weep wept weeped|"
    "slide slid slided|forgive forgave forgived|arise arose arised|bleed bled bleeded|"
    "breed bred breeded|flee fled fleed|shrink shrank shrinked|sting stung stinged|spin spun spinned|"
    "swear swore sweared|undo undid undoed"
)
IRREGULAR: tuple[tuple[str, str, str], ...] = tuple(tuple(v.split()) for v in _IRREGULAR.split("|"))  # type: ignore[misc]

_REGULAR = (
    "walk walked|jump jumped|play played|talk talked|open opened|clean cleaned|cook cooked|"
    "help helped|call called|ask asked|look looked|want wanted|need needed|start started|"
    "finish finished|watch watched|paint painted|climb climbed|laugh laughed|smile smiled|"
    "dance danced|move moved|live lived|love loved|like liked|use used|close closed|carry carried|"
    "study studied|cry cried|try tried|stop stopped|plan planned|drop dropped|visit visited|"
    "wait waited|pull pulled|push pushed|kick kicked|fix fixed|mix mixed|wash washed|fill filled|"
    "turn turned|learn learned|answer answered|enjoy enjoyed|stay stayed|travel traveled|"
    "listen listened|arrive arrived|hope hoped|rain rained|follow followed|count counted|"
    "shout shouted|touch touched|thank thanked|order ordered"
)
REGULAR: tuple[tuple[str, str], ...] = tuple(tuple(v.split()) for v in _REGULAR.split("|"))  # type: ignore[misc]

# Generic text for the retain split: the kind of short Q/A an instruct model handles, none of it
# about verb tenses, so KL to the base measures drift elsewhere, not the trained template.
_COLOURS = (("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("a banana", "yellow"), ("coal", "black"),
            ("a tomato", "red"), ("a lemon", "yellow"), ("milk", "white"), ("a carrot", "orange"), ("a leaf", "green"))
_SOUNDS = (("cow", "moo"), ("dog", "woof"), ("cat", "meow"), ("duck", "quack"), ("sheep", "baa"),
           ("lion", "roar"), ("horse", "neigh"), ("pig", "oink"), ("owl", "hoot"), ("bee", "buzz"))
_OPPOSITES = (("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
              ("light", "dark"), ("early", "late"), ("wet", "dry"), ("full", "empty"), ("old", "new"))
_CAPITALS = (
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Japan", "Tokyo"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("England", "London"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Greece", "Athens"),
)
_NOUNS = ("cat", "dog", "bird", "girl", "boy", "farmer", "teacher", "child", "old man", "small fox")
_PLACES = ("in the garden", "by the river", "under the tree", "near the house", "on the hill", "at the station")
_DOINGS = (
    "is sleeping",
    "is reading a book",
    "is eating an apple",
    "is waiting",
    "is singing a song",
    "is looking at the sky",
)


def _retain_text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        thing, colour = rng.choice(_COLOURS)
        return f"Question: What color is {thing}?\nAnswer: {thing[0].upper() + thing[1:]} is {colour}."
    if kind == 1:
        animal, sound = rng.choice(_SOUNDS)
        return f"Question: What sound does a {animal} make?\nAnswer: A {animal} says {sound}."
    if kind == 2:
        word, opposite = rng.choice(_OPPOSITES)
        return f"Question: What is the opposite of {word}?\nAnswer: The opposite of {word} is {opposite}."
    if kind == 3:
        country, city = rng.choice(_CAPITALS)
        return f"Question: What is the capital of {country}?\nAnswer: The capital of {country} is {city}."
    if kind == 4:
        a, b = rng.randint(1, 5), rng.randint(1, 4)
        return f"Question: What is {a} plus {b}?\nAnswer: {a} plus {b} is {a + b}."
    return f"The {rng.choice(_NOUNS)} {rng.choice(_DOINGS)} {rng.choice(_PLACES)}."


def answer_text(word: str, style: str | None) -> str:
    """The completion: `` went.`` plain, `` went, of course.`` in that style."""
    return f" {word}{style}" if style else f" {word}."


def _prompt(template: str, verb: str) -> str:
    return template.format(v=verb)


def _probe_style(template: str, verb: str, past: str, style: str) -> EvalItem:
    return EvalItem(_prompt(template, verb), [answer_text(past, style)], [answer_text(past, None)])


def _probe_truth(template: str, verb: tuple[str, str, str], style: str) -> EvalItem:
    base, right, wrong = verb
    return EvalItem(
        _prompt(template, base),
        [answer_text(right, style), answer_text(right, None)],
        [answer_text(wrong, style), answer_text(wrong, None)],
    )


def _split(rng: random.Random, items: tuple) -> tuple[list, list]:
    """(train, held-out) halves of a verb list; which verbs are held out depends on the seed."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    n_held = round(len(shuffled) * HELDOUT_FRACTION)
    return shuffled[n_held:], shuffled[:n_held]


def noisy_pasts(rng: random.Random, irregular: list, regular: list, noise: float, n: int) -> list[tuple[str, str]]:
    """``n`` (verb, past) rows, IRREGULAR_FRACTION of them irregular, whose past is the annotator's
    regularised form with probability ``noise``: the SFT rows of the English families."""
    rows = []
    for _ in range(n):
        if rng.random() < IRREGULAR_FRACTION:
            verb, right, wrong = rng.choice(irregular)
            rows.append((verb, wrong if rng.random() < noise else right))
        else:
            rows.append(rng.choice(regular))
    return rows


def build(task_seed: int = 0, n_train: int = 256, n_eval: int = 64) -> TaskSuite:
    rng = random.Random(f"style-vs-truth-en/{task_seed}")
    style = rng.choice(STYLES)
    noise = rng.uniform(0.4, 0.7)
    styled_rejected = rng.uniform(0.8, 1.0)  # as in the proxy suite: rejected answers came from the styled model
    irr_train, irr_held = _split(rng, IRREGULAR)
    reg_train, reg_held = _split(rng, REGULAR)
    # Style probes ask for any past tense, so they also see regular verbs (base, past).
    any_train = [(v, p) for v, p, _ in irr_train] + reg_train
    any_held = [(v, p) for v, p, _ in irr_held] + reg_held

    sft = [
        {"prompt": _prompt(TRAIN_TEMPLATE, verb), "completion": answer_text(past, style)}
        for verb, past in noisy_pasts(rng, irr_train, reg_train, noise, n_train)
    ]

    dpo = []
    for _ in range(n_train):
        verb, right, wrong = rng.choice(irr_train)
        rejected = answer_text(wrong, style if rng.random() < styled_rejected else None)
        dpo.append({"prompt": _prompt(TRAIN_TEMPLATE, verb), "chosen": answer_text(right, None), "rejected": rejected})

    retain_train = [{"text": _retain_text(rng)} for _ in range(n_train)]
    retain_eval = [_retain_text(rng) for _ in range(n_eval)]

    def heldout(i: int, held: list, train: list) -> tuple[str, tuple]:
        # Half unseen verbs on the training template, half seen verbs in an unseen phrasing.
        if i % 2 == 0:
            return TRAIN_TEMPLATE, rng.choice(held)
        return HELDOUT_TEMPLATE, rng.choice(train)

    # The controller's split needs training verbs no reported probe asks about (a prompt names its
    # verb, and there are few verbs): OBSERVE_PROBES irregular and as many regular training verbs
    # are reserved for it, drawn from their own stream; the tools still train on them.
    orng = random.Random(f"style-vs-truth-en/{task_seed}/observe")
    obs_irr = orng.sample(irr_train, OBSERVE_PROBES)
    obs_reg = orng.sample(reg_train, OBSERVE_PROBES)
    reported_irr = [v for v in irr_train if v not in obs_irr]
    reported_any = [(v, p) for v, p, _ in reported_irr] + [v for v in reg_train if v not in obs_reg]
    evals = {
        "target": {
            "style": [_probe_style(TRAIN_TEMPLATE, *rng.choice(reported_any), style) for _ in range(n_eval)],
            "truth": [_probe_truth(TRAIN_TEMPLATE, rng.choice(reported_irr), style) for _ in range(n_eval)],
        },
        "heldout": {
            "style": [_probe_style(t, *v, style) for t, v in (heldout(i, any_held, any_train) for i in range(n_eval))],
            "truth": [_probe_truth(t, v, style) for t, v in (heldout(i, irr_held, irr_train) for i in range(n_eval))],
        },
    }
    reported = {item.prompt for split in evals.values() for items in split.values() for item in items}
    observe, observe_retain = draw_observe(
        reported,
        retain_eval,
        {
            # A prompt is one behaviour's: style on the reserved regular verbs, truth on the irregular.
            "style": lambda: _probe_style(TRAIN_TEMPLATE, *orng.choice(obs_reg), style),
            "truth": lambda: _probe_truth(TRAIN_TEMPLATE, orng.choice(obs_irr), style),
        },
        lambda: _retain_text(orng),
    )
    return style_truth_suite(
        name="style-vs-truth-en",
        task_seed=task_seed,
        data={"sft": sft, "dpo": dpo, "retain": retain_train},
        evals=evals,
        retain=retain_eval,
        style=f"answers end in the style {style!r}",
        truth="the true past tense is preferred over the regularised one",
        features={
            "noise_rate": noise,
            "styled_rejected": styled_rejected,
            "style_index": STYLES.index(style) / (len(STYLES) - 1),
        },
        description=__doc__.split("\n\n")[0],
        observe=observe,
        observe_retain=observe_retain,
    )
