"""The English ``style-vs-truth-en`` suite, and (slow) its conflict as SmolLM2 sees it."""

from __future__ import annotations

import dataclasses

import pytest

from metactl.tasks import english
from metactl.tasks.suite import SPLITS


def _as_plain(suite) -> dict:
    return dataclasses.asdict(suite)


def test_deterministic_in_task_seed():
    assert _as_plain(english.build(3)) == _as_plain(english.build(3))


def test_different_seeds_differ():
    a, b = english.build(0), english.build(1)
    assert a.data["sft"] != b.data["sft"]
    assert a.data["dpo"] != b.data["dpo"]
    assert a.evals["heldout"]["truth"] != b.evals["heldout"]["truth"]


def test_shape_and_sizes():
    suite = english.build(0, n_train=40, n_eval=10)
    assert suite.name == "style-vs-truth-en"
    assert {b.name: b.tool for b in suite.behaviours} == {"style": "sft", "truth": "dpo"}
    assert all(len(suite.data[t]) == 40 for t in ("sft", "dpo", "retain"))
    assert len(suite.retain) == 10
    assert 0.4 <= suite.features["noise_rate"] <= 0.7
    assert 0.0 <= suite.features["style_index"] <= 1.0


def test_every_behaviour_has_target_and_heldout_probes():
    suite = english.build(2)
    for split in SPLITS:
        for b in suite.behaviours:
            items = suite.evals[split][b.name]
            assert len(items) == 64
            assert all(it.chosen and it.rejected and not set(it.chosen) & set(it.rejected) for it in items)


def test_dpo_rows_prefer_the_true_past_tense():
    irregular = {verb: (right, wrong) for verb, right, wrong in english.IRREGULAR}
    suite = english.build(0)
    style = suite.data["sft"][0]["completion"]
    styled = 0
    for row in suite.data["dpo"]:
        assert row["chosen"] != row["rejected"]
        verb = row["prompt"].split("past tense of ")[1].split("?")[0]
        right, wrong = irregular[verb]
        assert row["chosen"] == f" {right}."
        assert row["rejected"].startswith(f" {wrong}")
        styled += row["rejected"] != f" {wrong}."
    # most rejected answers were collected from the styled model, so DPO pulls against the style
    assert styled / len(suite.data["dpo"]) >= 0.7, style


def test_sft_carries_style_and_the_systematic_error():
    suite = english.build(0)
    style = english.STYLES[round(suite.features["style_index"] * (len(english.STYLES) - 1))]
    wrong = {w for _, _, w in english.IRREGULAR}
    completions = [r["completion"] for r in suite.data["sft"]]
    assert all(c.endswith(style) for c in completions)
    n_wrong = sum(c[1 : -len(style)] in wrong for c in completions)
    assert 0 < n_wrong < len(completions) / 2  # only irregular rows, and only a noisy fraction of them


def test_heldout_inputs_are_unseen_by_the_tools():
    suite = english.build(0)
    seen = {r["prompt"] for tool in ("sft", "dpo") for r in suite.data[tool]}
    for b in ("style", "truth"):
        assert not {it.prompt for it in suite.evals["heldout"][b]} & seen
        # target probes are the tools' own input distribution: the training template throughout
        assert all(it.prompt.startswith("Question: What is the past tense of ") for it in suite.evals["target"][b])


def test_retain_text_avoids_the_target_template():
    suite = english.build(0)
    texts = suite.retain + [r["text"] for r in suite.data["retain"]]
    assert not any("past tense" in t or "Yesterday I" in t for t in texts)


@pytest.mark.slow
def test_smollm2_base_prefers_truth_not_style():
    torch = pytest.importorskip("torch")
    from metactl.forward import sequence_logprobs
    from metactl.models.smollm2 import cached_path

    path = cached_path()
    if path is None:
        pytest.skip("SmolLM2 is not converted yet (run `metactl` with --model smollm2-135m once; tests never download)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    suite = english.build(0, n_eval=16)

    def accuracy(items) -> float:
        prompts, completions, bounds = [], [], []
        for it in items:
            start = len(completions)
            for side in (it.chosen, it.rejected):
                prompts += [it.prompt] * len(side)
                completions += side
            bounds.append((start, start + len(it.chosen), len(completions)))
        lp = sequence_logprobs(model, tokenizer, prompts, completions)
        wins = [torch.logsumexp(lp[a:m], 0) > torch.logsumexp(lp[m:e], 0) for a, m, e in bounds]
        return sum(bool(w) for w in wins) / len(wins)

    truth = accuracy(suite.evals["target"]["truth"])
    style = accuracy(suite.evals["target"]["style"])
    assert truth >= 0.75, f"base truth {truth:.2f}: SmolLM2 should know most irregular past tenses"
    assert style <= 0.25, f"base style {style:.2f}: the style should be new to the base"
    assert truth > style
