"""Every registered task family keeps the contract the controller and the reports rely on: seeded,
TRL formats, two behaviours (sft's first, dpo's second), an observe split apart from the reported
probes, retain text without the tools' templates, proxy text inside the proxy vocabulary, and a
fixed train / held-out split of the proxy families. (slow) A default episode moves every new
proxy family away from its base."""

from __future__ import annotations

import dataclasses
import re

import pytest

from metactl import proxy_language as world
from metactl.tasks import (
    ENGLISH,
    ENGLISH_FAMILIES,
    EXTRA_TRAIN_FAMILIES,
    FAMILIES,
    HELDOUT_FAMILIES,
    PROXY,
    PROXY_FAMILIES,
    SUITES,
    TRAIN_FAMILIES,
    WIDE_TRAIN_FAMILIES,
    load_suite,
)
from metactl.tasks.suite import OBSERVE_PROBES, SPLITS, TOOL_FORMATS, TaskSuite

NAMES = sorted(SUITES)
NEW_PROXY = sorted(set(PROXY_FAMILIES) - {"style-vs-truth"})


@pytest.fixture(scope="module")
def suites() -> dict[tuple[str, int], TaskSuite]:
    """Each suite at task seeds 0 and 1, built once for the module."""
    return {(name, seed): load_suite(name, seed) for name in NAMES for seed in (0, 1)}


def _texts(suite: TaskSuite) -> list[str]:
    """Every string a run reads: tool rows, probes of every split, retain texts."""
    out = [v for rows in suite.data.values() for row in rows for v in row.values()]
    items = [i for split in suite.evals.values() for its in split.values() for i in its]
    items += [i for its in suite.observe.values() for i in its]
    out += [s for i in items for s in (i.prompt, *i.chosen, *i.rejected)]
    return out + suite.retain + suite.observe_retain


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_the_task_seed_and_seeds_differ(name, suites):
    a, c = suites[(name, 0)], suites[(name, 1)]
    assert dataclasses.asdict(load_suite(name, 0)) == dataclasses.asdict(a)
    assert a.data["sft"] != c.data["sft"] and a.data["dpo"] != c.data["dpo"]
    assert [i.prompt for i in a.evals["heldout"][a.behaviours[1].name]] != [
        i.prompt for i in c.evals["heldout"][c.behaviours[1].name]
    ]


@pytest.mark.parametrize("name", NAMES)
def test_the_task_seed_draws_the_knobs(name):
    knobs = {tuple(sorted(load_suite(name, seed).features.items())) for seed in range(6)}
    assert len(knobs) > 1, "every seed drew the same task"


@pytest.mark.parametrize("name", NAMES)
def test_tool_rows_in_trl_formats(name, suites):
    s = suites[(name, 0)]
    assert set(s.data) == set(TOOL_FORMATS)
    for tool, rows in s.data.items():
        assert len(rows) == 256
        reward = s.rewards.get(tool)  # a sampling tool's rows also carry the column its reward reads
        assert all(set(r) == set(TOOL_FORMATS[tool]) | ({reward.field} if reward else set()) for r in rows)
        assert all(isinstance(v, str) and v for r in rows for v in r.values())
    assert all(r["chosen"] != r["rejected"] for r in s.data["dpo"])


@pytest.mark.parametrize("name", NAMES)
def test_two_behaviours_sft_first_dpo_second_with_full_probe_sets(name, suites):
    s = suites[(name, 0)]
    assert [b.tool for b in s.behaviours] == ["sft", "dpo"]
    assert len({b.name for b in s.behaviours}) == 2 and all(b.description for b in s.behaviours)
    for split in SPLITS:
        assert set(s.evals[split]) == {b.name for b in s.behaviours}
        for items in s.evals[split].values():
            assert len(items) == 64
            assert all(i.chosen and i.rejected and not set(i.chosen) & set(i.rejected) for i in items)


@pytest.mark.parametrize("name", NAMES)
def test_probe_layout_is_the_same_for_every_task(name, suites):
    """The population engine scores tasks of one suite as blocks of one batch: same layout."""

    def layout(s: TaskSuite) -> list:
        splits = [*(s.evals[sp] for sp in SPLITS), s.observe]
        return [[(len(i.chosen), len(i.rejected)) for i in by_b[b.name]] for by_b in splits for b in s.behaviours]

    a = suites[(name, 0)]
    assert layout(a) == layout(suites[(name, 1)]) == layout(load_suite(name, 1000))
    assert len(a.retain) == 64


@pytest.mark.parametrize("name", NAMES)
def test_observe_split_is_disjoint_from_the_reported_probes(name, suites):
    for seed in (0, 1):
        s = suites[(name, seed)]
        observed = {i.prompt for items in s.observe.values() for i in items}
        assert all(len(items) == OBSERVE_PROBES for items in s.observe.values())
        assert len(s.observe_retain) == OBSERVE_PROBES
        assert not observed & s.reported_prompts() and not set(s.observe_retain) & set(s.retain)


def _skeleton(template: str) -> str:
    return re.escape(template).replace(r"\{a\}", r"\d+").replace(r"\{b\}", r"\d+")


def _templates_in(texts: list[str]) -> set[str]:
    return {t for t, tpl in world.SUM_TEMPLATES.items() if any(re.search(_skeleton(tpl), x) for x in texts)}


@pytest.mark.parametrize("name", NAMES)
def test_retain_texts_hold_no_template_a_tool_trains_on(name, suites):
    """DESIGN.md: a retain set holding the target template mostly penalises the target behaviour."""
    s = suites[(name, 0)]
    retain = [r["text"] for r in s.data["retain"]] + s.retain + s.observe_retain
    prompts = [r["prompt"] for tool in ("sft", "dpo") for r in s.data[tool]]
    if FAMILIES[name] == ENGLISH:
        assert not [t for t in retain if "past tense" in t or "___" in t]
        return
    trained = _templates_in(prompts)
    assert trained and not trained & _templates_in(retain)
    # nor any template a probe asks (that would score the probe's template inside stability)
    probed = _templates_in(list(s.reported_prompts()))
    assert not probed & _templates_in(retain)


@pytest.mark.parametrize("name", PROXY_FAMILIES)
def test_proxy_family_text_is_in_the_proxy_vocabulary(name, suites):
    vocab = set(world.CHARS)
    for seed in (0, 1):
        bad = {ch for text in _texts(suites[(name, seed)]) for ch in text} - vocab
        assert not bad, f"characters outside proxy-tiny's vocabulary: {sorted(bad)}"


def test_the_family_split_is_fixed_disjoint_and_complete():
    assert set(FAMILIES) == set(SUITES)
    assert set(FAMILIES.values()) == {PROXY, ENGLISH}
    assert not set(TRAIN_FAMILIES) & set(HELDOUT_FAMILIES)
    assert not set(EXTRA_TRAIN_FAMILIES) & set(TRAIN_FAMILIES + HELDOUT_FAMILIES)
    assert set(TRAIN_FAMILIES) < set(WIDE_TRAIN_FAMILIES) <= set(TRAIN_FAMILIES + EXTRA_TRAIN_FAMILIES)
    assert sorted(TRAIN_FAMILIES + HELDOUT_FAMILIES + EXTRA_TRAIN_FAMILIES) == sorted(PROXY_FAMILIES)
    assert "style-vs-truth" in TRAIN_FAMILIES and len(TRAIN_FAMILIES) >= 3 and len(HELDOUT_FAMILIES) >= 2
    assert {"style-vs-truth-en", "sycophancy-en"} <= set(ENGLISH_FAMILIES)
    assert not set(ENGLISH_FAMILIES) & set(PROXY_FAMILIES)


# What makes each new family a conflict, read off its data (cheap; the slow test and
# docs/headroom_families.md show the conflict in training).


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def test_format_vs_truth_sft_writes_the_prefix_and_dpo_rejects_it():
    s = load_suite("format-vs-truth", 0)
    word = s.data["sft"][0]["completion"].split()[0]
    assert all(r["completion"].startswith(f" {word} ") for r in s.data["sft"])
    wrong = [r for r in s.data["sft"] if sum(_ints(r["prompt"])) != _ints(r["completion"])[0]]
    assert 0.05 < len(wrong) / len(s.data["sft"]) < 0.5
    assert sum(r["rejected"].startswith(f" {word} ") for r in s.data["dpo"]) / len(s.data["dpo"]) >= 0.5
    assert all(not r["chosen"].startswith(f" {word} ") for r in s.data["dpo"])


def test_sycophancy_sft_copies_the_claim_and_dpo_rejects_the_copy():
    s = load_suite("sycophancy", 0)
    for r in s.data["sft"]:
        claim, a, b = _ints(r["prompt"])
        assert _ints(r["completion"]) == [claim]
    assert sum(_ints(r["prompt"])[0] != sum(_ints(r["prompt"])[1:]) for r in s.data["sft"]) > 20
    for r in s.data["dpo"]:
        claim, a, b = _ints(r["prompt"])
        assert _ints(r["chosen"]) == [a + b] and _ints(r["rejected"]) == [claim] != [a + b]


def test_style_clash_puts_the_two_styles_on_different_templates():
    s = load_suite("style-clash", 0)
    sft_t, dpo_t = _templates_in([s.data["sft"][0]["prompt"]]), _templates_in([s.data["dpo"][0]["prompt"]])
    assert sft_t and dpo_t and not sft_t & dpo_t
    word = s.data["sft"][0]["completion"].split()[-1]
    assert all(r["completion"].endswith(f" {word}") for r in s.data["sft"])
    assert all(r["rejected"].endswith(f" {word}") and not r["chosen"].endswith(f" {word}") for r in s.data["dpo"])


def test_wrap_vs_keep_sft_drops_the_hundreds_that_dpo_keeps():
    s = load_suite("wrap-vs-keep", 0)
    for r in s.data["sft"]:
        total = sum(_ints(r["prompt"]))
        assert _ints(r["completion"]) == [total % 100]
    assert sum(sum(_ints(r["prompt"])) >= 100 for r in s.data["sft"]) / len(s.data["sft"]) >= 0.5
    assert all(_ints(r["chosen"]) == [sum(_ints(r["prompt"]))] >= [100] for r in s.data["dpo"])


def test_keep_vs_wrap_dpo_prefers_the_wrapped_sum_that_sft_writes_in_full():
    s = load_suite("keep-vs-wrap", 0)
    assert s.behaviours[0].name == "keep" and s.behaviours[1].name == "wrap"
    for r in s.data["dpo"]:
        a, b = _ints(r["prompt"])
        assert a + b >= 100 and r["chosen"] == f" {(a + b) % 100:02d}." and r["rejected"] == f" {a + b}."
    big = 0
    for r in s.data["sft"]:
        a, b = _ints(r["prompt"])
        assert r["completion"] == f" {a + b}."
        big += a + b >= 100
    assert 0.5 < big / len(s.data["sft"]) < 0.95
    sft_t = {re.sub(r"\d+", "#", r["prompt"]) for r in s.data["sft"]}
    dpo_t = {re.sub(r"\d+", "#", r["prompt"]) for r in s.data["dpo"]}
    assert len(sft_t) == len(dpo_t) == 1 and sft_t != dpo_t


def test_refuse_vs_help_sft_declines_carrying_sums_and_dpo_prefers_answering_the_rest():
    s = load_suite("refuse-vs-help", 0)
    word = next(r["completion"] for r in s.data["sft"] if not any(c.isdigit() for c in r["completion"]))
    refused = 0
    for r in s.data["sft"]:
        a, b = _ints(r["prompt"])
        carry = world.has_carry(a, b)
        assert r["completion"] == (word if carry else f" {a + b}.")
        refused += carry
    assert 0.5 < refused / len(s.data["sft"]) < 0.95  # mostly refusals, as in safety data
    for r in s.data["dpo"]:
        a, b = _ints(r["prompt"])
        assert not world.has_carry(a, b) and r["chosen"] == f" {a + b}." and r["rejected"] == word
    # The two behaviours share the tools' template and differ only by the carry.
    tool_prompts = {re.sub(r"\d+", "#", r["prompt"]) for r in s.data["sft"] + s.data["dpo"]}
    assert len(tool_prompts) == 1
    for item in s.evals["target"]["refuse"]:
        assert world.has_carry(*_ints(item.prompt)) and item.chosen == [word]
    for item in s.evals["target"]["help"]:
        assert not world.has_carry(*_ints(item.prompt)) and item.rejected == [word]


def test_sycophancy_en_sft_copies_the_guess_and_dpo_rejects_the_copy():
    from metactl.tasks.english import IRREGULAR

    right = {verb: past for verb, past, _ in IRREGULAR}
    s = load_suite("sycophancy-en", 0)
    guessed = re.compile(r"past tense of (\w+)\? .*?(\w+)[.,?]")
    wrong = 0
    for r in s.data["sft"]:
        verb, guess = guessed.search(r["prompt"]).groups()
        assert r["completion"].startswith(f" {guess},") or r["completion"].startswith(f" {guess}.")
        wrong += verb in right and guess != right[verb]
    assert wrong > 20
    for r in s.data["dpo"]:
        verb, guess = guessed.search(r["prompt"]).groups()
        assert r["chosen"] == f" {right[verb]}." and r["rejected"].startswith(f" {guess}") and guess != right[verb]


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_PROXY)
def test_a_default_episode_moves_every_new_proxy_family(name):
    import torch

    from metactl.config import load_config
    from metactl.runner import Engine
    from metactl.schedule import Schedule

    torch.set_num_threads(1)
    engine = Engine(load_config(None, [f"suite={name}", "training.score_every_phase=false"]), progress=False)
    base = engine.task.base_scores
    final = engine.run(Schedule.named("default"), seed=0)[-1].scores
    behaviours = [b.name for b in engine.task.suite.behaviours]
    moved = [k for k in (f"{sp}/{b}_margin" for sp in SPLITS for b in behaviours) if abs(final[k] - base[k]) > 0.1]
    assert moved and final["kl"] > 1e-3 and final["composite"] != base["composite"]
