"""Every registered tool trains only its own adapter and moves the behaviour it is meant to."""

import pytest
import torch

from metactl.schedule import parse_schedule
from metactl.tools import TOOLS


def _only(tool: str, output: float = 1.0, groups: int = 4):
    return parse_schedule({"schema_version": 1, "layer_groups": groups,
                           "phases": [{"fraction": 1.0, "tools": {tool: {"share": 1, "output": output}}}]})


def _lora_state(engine):
    return {n: p.detach().clone() for n, p in engine.model.named_parameters() if "lora_" in n}


@pytest.fixture(scope="module")
def every_tool():
    """An engine with every registered tool (grpo is opt-in: a run names it in ``tools``)."""
    from metactl.config import load_config
    from metactl.runner import Engine

    sets = ["training.total_steps=24", "training.score_every_phase=false", *(f"tools.{t}={{}}" for t in TOOLS)]
    return Engine(load_config(None, sets), progress=False)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tool_trains_only_its_own_adapter(every_tool, tool):
    engine = every_tool
    assert engine.tool_names == list(TOOLS)
    ep = engine.episode(0)
    # SFT first: at the base every sampled sum is right, so grpo's advantages (and gradient) are all zero.
    ep.run_phase(_only("sft").phases[0], steps=3, score=False)
    before = _lora_state(engine)
    res = ep.run_phase(_only(tool).phases[0], steps=3, score=False)
    after = _lora_state(engine)
    changed = {n.split(".")[-2] for n in after if not torch.equal(before[n], after[n])}
    assert changed == {tool}
    assert res.tool_steps == {tool: 3} and all(torch.isfinite(torch.tensor(v)) for v in res.losses.values())


def test_frozen_groups_do_not_move(engine):
    sched = parse_schedule({"schema_version": 1, "layer_groups": 4, "phases": [
        {"fraction": 1.0, "tools": {"sft": {"share": 1, "train": [0, 0, 1, 1]}}}]})
    ep = engine.episode(0)
    before = _lora_state(engine)
    ep.run_phase(sched.phases[0], steps=3, score=False)
    after = _lora_state(engine)
    moved_layers = {int(n.split("layers.")[1].split(".")[0]) for n in after if not torch.equal(before[n], after[n])}
    assert moved_layers == {2, 3}


def test_sft_raises_style(engine):
    base = engine.task.base_scores
    res = engine.episode(0).run_phase(_only("sft").phases[0], steps=24)
    assert res.scores["target/style"] > base["target/style"] + 0.3


def test_dpo_raises_preference_margin(engine):
    base = engine.task.base_scores
    res = engine.episode(0).run_phase(_only("dpo").phases[0], steps=24)
    assert res.scores["target/truth_margin"] > base["target/truth_margin"] + 0.1


def test_output_scale_raises_kl(engine):
    ep = engine.episode(0)
    ep.run_phase(_only("sft").phases[0], steps=16, score=False)
    kls = []
    for scale in (0.0, 0.5, 1.0, 1.5):
        engine.adapters.set_output({"sft": [[scale] * 4, [scale] * 4]})
        kls.append(engine.task.scorer.score(engine.model)["kl"])
    assert kls[0] < 1e-6 and kls == sorted(kls) and kls[-1] > kls[1] * 2


def test_a_retain_step_without_cached_base_logprobs_trains_only_retain(engine, monkeypatch):
    """Large vocabularies recompute the base's log-probs per step (peft's disable_adapter); that
    reference pass must not mark the other active adapters trainable."""
    retain = engine.task.tools["retain"]
    monkeypatch.setattr(retain, "base_logp", None)
    ep = engine.episode(0)
    ep.run_phase(_only("sft").phases[0], steps=2, score=False)  # sft is now trained, hence active
    both = parse_schedule({"schema_version": 1, "layer_groups": 4, "phases": [
        {"fraction": 1.0, "tools": {"sft": {"share": 0}, "retain": {"share": 1}}}]})
    before = _lora_state(engine)
    ep.run_phase(both.phases[0], steps=2, score=False)
    after = _lora_state(engine)
    assert {n.split(".")[-2] for n in after if not torch.equal(before[n], after[n])} == {"retain"}
