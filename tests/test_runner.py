import pytest
import torch

from metactl.cli import resolve_schedule_path
from metactl.schedule import Schedule


@pytest.fixture(scope="module")
def expert():
    return Schedule.load(resolve_schedule_path("expert"))


def test_runner_is_deterministic_under_a_seed(engine, expert):
    a = engine.run(expert, seed=5)
    b = engine.run(expert, seed=5)
    c = engine.run(expert, seed=6)
    assert [r.scores for r in a] == [r.scores for r in b]
    assert [r.norms for r in a] == [r.norms for r in b]
    assert a[-1].scores != c[-1].scores


def test_phases_follow_the_schedule(engine, expert):
    res = engine.run(expert, seed=0)
    assert [r.steps for r in res] == expert.phase_steps(engine.config.training.total_steps)
    assert set(res[0].tool_steps) == {"sft"} and set(res[-1].tool_steps) == {"sft", "dpo", "retain"}
    assert res[-1].scores is not None


def test_run_dir_adapters_reload_with_plain_peft(engine, expert, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from metactl.rundir import read_scores, write_schedule_run

    results = engine.run(expert, seed=1)
    out = write_schedule_run(tmp_path / "run", engine.config, expert, engine, results, seed=1)
    final = read_scores(out)[-1]["scores"]

    base = AutoModelForCausalLM.from_pretrained(engine.model_path).eval()
    tools = engine.tool_names
    model = PeftModel.from_pretrained(base, str(out / "adapters" / tools[0]), adapter_name=tools[0])
    for t in tools[1:]:
        model.load_adapter(str(out / "adapters" / t), adapter_name=t)
    model.base_model.set_adapter(tools)
    rescored = engine.task.scorer.score(model)
    for key in ("target/style", "target/truth", "heldout/style", "heldout/truth", "composite"):
        assert rescored[key] == pytest.approx(final[key], abs=1e-5), key
    assert rescored["kl"] == pytest.approx(final["kl"], rel=1e-4, abs=1e-6)
    assert Schedule.load(out / "schedule.yaml") == expert
    assert torch.is_tensor(next(model.parameters()))
