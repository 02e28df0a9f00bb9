import pytest
import torch

from metactl.schedule import Schedule


@pytest.fixture(scope="module")
def expert():
    return Schedule.named("expert")


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

    from metactl.commands.run_schedule import write_run_dir
    from metactl.rundir import SCORES, read_jsonl

    results = engine.run(expert, seed=1)
    out = write_run_dir(tmp_path / "run", engine.config, expert, engine, results, seed=1)
    final = read_jsonl(out / SCORES)[-1]["scores"]

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


def test_runner_on_a_gpt2_folder(tmp_path, expert):
    """A second architecture (Conv1D modules, other names) runs through the same runner."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from metactl.config import load_config
    from metactl.proxy_language import build_tokenizer
    from metactl.runner import Engine

    tok = build_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=4, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    eng = Engine(load_config(None, [f"model={tmp_path}", "training.total_steps=8"]), progress=False)
    assert eng.layer_map.conv1d and eng.layer_map.architecture == "gpt2"
    res = eng.run(expert, seed=0)
    assert sum(r.steps for r in res) == 8 and res[-1].scores["kl"] > 0


@pytest.mark.parametrize("name", ["expert", "maxright-2"])
def test_interrupted_run_resumes_to_identical_results(engine, name, tmp_path):
    """Also for MAXRIGHT over two phases: its order reads the losses of earlier phases, so they
    are part of the checkpoint."""
    if name == "expert":
        sched = Schedule.named("expert")
    else:
        data = Schedule.named("maxright").to_dict()
        data["phases"] = [dict(data["phases"][0], fraction=f) for f in (0.25, 0.25, 0.25, 0.25)]
        sched = Schedule.from_dict(data)
    expert = sched
    ckpt = tmp_path / "ckpt.pt"
    full = engine.run(expert, seed=3)

    class Interrupt(Exception):
        pass

    def stop_after_second(res):
        if res.phase == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        engine.run(expert, seed=3, checkpoint=ckpt, on_phase=stop_after_second)
    seen = []
    resumed = engine.run(expert, seed=3, checkpoint=ckpt, on_phase=lambda r: seen.append(r.phase))
    assert seen == [2, 3], "completed phases must not run again"
    assert [r.scores for r in resumed] == [r.scores for r in full]
    assert [r.norms for r in resumed] == [r.norms for r in full]


def test_checkpoint_of_another_run_is_refused(engine, expert, tmp_path):
    from metactl.errors import ConfigError

    ckpt = tmp_path / "ckpt.pt"
    engine.run(expert, seed=3, checkpoint=ckpt)
    with pytest.raises(ConfigError, match="different run"):
        engine.run(expert, seed=4, checkpoint=ckpt)
