"""transfer: depth-group and module-kind mapping across architectures, a transferred schedule and
a transferred controller on a second architecture end to end, and bad input before weights load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.layer_map import preflight_layer_map, resolve_layer_map
from metactl.models import ASSETS

TINY_TRAIN = [
    "n_envs=1", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,2]",
    "eval_task_seeds=[1000]", "compare=[default,averaged]", "ppo.episodes_per_update=2", "total_episodes=2",
    "run.suite=style-vs-truth", "eval_suites=[]",  # the transfer mechanics on one family's parts
    "ppo.group_size=1", "ppo.antithetic=false",  # one env holds no mirrored pair
]


def _skeleton(model_type: str, layers: int):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if model_type == "gpt2":
        cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=16, n_layer=layers, n_head=2)
    else:
        cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                          num_attention_heads=2, num_key_value_heads=2)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize(
    ("layers", "groups", "expected"),
    [
        (4, 2, [[0, 1], [2, 3]]),
        (6, 2, [[0, 1, 2], [3, 4, 5]]),
        (30, 2, [list(range(15)), list(range(15, 30))]),
        (6, 4, [[0, 1], [2], [3, 4], [5]]),
        (30, 4, [list(range(8)), list(range(8, 15)), list(range(15, 23)), list(range(23, 30))]),
        (30, 1, [list(range(30))]),
    ],
)
def test_depth_groups_cover_the_layers_by_relative_depth(layers, groups, expected):
    lm = resolve_layer_map(_skeleton("llama", layers), groups)
    assert [lm.layers_of_group(g) for g in range(groups)] == expected
    # Every module of a layer sits in that layer's group; 7 adaptable linears per Llama block.
    assert all(m.group == next(g for g, ls in enumerate(expected) if m.layer in ls) for m in lm.modules)
    assert len(lm.modules) == 7 * layers
    assert lm.kind_names("attn") == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert lm.kind_names("mlp") == ["down_proj", "gate_proj", "up_proj"]


def test_gpt2_module_kinds_come_from_its_own_module_names():
    lm = resolve_layer_map(_skeleton("gpt2", 6), 2)
    assert lm.architecture == "gpt2" and lm.conv1d  # Conv1D weights: peft needs fan_in_fan_out
    assert [lm.layers_of_group(g) for g in range(2)] == [[0, 1, 2], [3, 4, 5]]
    by_kind = {k: sorted({m.name.split(".", 3)[-1] for m in lm.modules if m.kind == k}) for k in ("attn", "mlp")}
    assert by_kind == {"attn": ["attn.c_attn", "attn.c_proj"], "mlp": ["mlp.c_fc", "mlp.c_proj"]}
    assert "layers 0-2" in lm.describe() and "c_fc" in lm.describe()


# -- a second architecture, random init, with the proxy's tokenizer ---------------------------------
@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("gpt2-tiny")
    tok = AutoTokenizer.from_pretrained(ASSETS / "proxy-tiny")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=3, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _train(out: Path, policy: str) -> Path:
    args = ["train-controller", "--out", str(out), "--quiet", "--policy", policy]
    for o in TINY_TRAIN:
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def controller_run(tmp_path_factory) -> Path:
    """A real (tiny) train-controller run: config.yaml, schedule.yaml, controller.zip and envelope.json."""
    return _train(tmp_path_factory.mktemp("src") / "run", "ppo")


def _transfer(*args: str):
    return CliRunner().invoke(app, ["transfer", *args, "--quiet"])


def test_transferred_schedule_runs_end_to_end_on_gpt2_with_merge_and_resume(controller_run, gpt2_dir, tmp_path):
    out = tmp_path / "t"
    res = _transfer(str(controller_run), "--model", str(gpt2_dir), "--steps", "6", "--task-seed", "1000",
                    "--task-seed", "1001", "--compare", "expert", "--merge", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["label"], r["task_seed"]) for r in rows) == sorted(
        (lb, ts) for lb in ("learned", "default", "expert") for ts in (1000, 1001))
    assert all(r["scores"]["composite"] != r["base"]["composite"] for r in rows)  # training changed the model
    assert "learned - default" in res.output and "heldout/truth" in res.output
    assert "gpt2, 3 layers -> group 0: layers 0-1, group 1: layer 2" in (out / "comparison.txt").read_text()
    # The learned run's schedule is the source's (mapped to the target), recorded next to its scores.
    from metactl.schedule import Schedule

    ran = Schedule.load(out / "schedule.yaml")
    src = Schedule.load(controller_run / "schedule.yaml")
    assert [p.fraction for p in ran.phases] == [p.fraction for p in src.phases]
    assert ran.phases[0].tools["sft"].share == pytest.approx(src.phases[0].tools["sft"].share, abs=1e-6)

    # peft adapters for the target, and a merged model equal to base + adapters.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    base = AutoModelForCausalLM.from_pretrained(gpt2_dir)
    with torch.no_grad():
        before = base(ids).logits
        peft = PeftModel.from_pretrained(base, str(out / "adapters" / "sft"), adapter_name="sft")
        for tool in ("dpo", "retain"):
            peft.load_adapter(str(out / "adapters" / tool), adapter_name=tool)
        peft.base_model.set_adapter(["sft", "dpo", "retain"])
        adapted = peft(ids).logits
        assert not torch.allclose(adapted, before, atol=1e-4)
        torch.testing.assert_close(merged(ids).logits, adapted, atol=1e-4, rtol=1e-4)

    # Rerunning the same command resumes: nothing is run twice.
    again = _transfer(str(controller_run), "--model", str(gpt2_dir), "--steps", "6", "--task-seed", "1000",
                      "--task-seed", "1001", "--compare", "expert", "--merge", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert len((out / "results.jsonl").read_text().splitlines()) == len(rows)
    # A different transfer into the same dir is refused rather than mixed in.
    other = _transfer(str(controller_run), "--model", str(gpt2_dir), "--steps", "7", "--out", str(out))
    assert other.exit_code == 2 and "different config" in other.output


def test_transferred_controller_acts_closed_loop_on_gpt2(controller_run, gpt2_dir, tmp_path):
    out = tmp_path / "p"
    res = _transfer(str(controller_run), "--model", str(gpt2_dir), "--mode", "policy", "--steps", "4",
                    "--task-seed", "1000", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"learned", "default"}
    # The controller chose its phases on the target: as many as it was trained with (env.phases=2).
    assert len(rows["learned"]["schedule"]["phases"]) == 2
    assert (out / "adapters" / "sft" / "adapter_config.json").is_file()


def test_an_enveloped_controller_acts_inside_its_training_range_on_gpt2(controller_run, gpt2_dir, tmp_path):
    """--envelope clips each action into the range the controller took in that phase on its training tasks."""
    import numpy as np

    from metactl.policies.envelope import ActionEnvelope

    envelope = ActionEnvelope.load(controller_run / "envelope.json")
    out = tmp_path / "e"
    res = _transfer(str(controller_run), "--model", str(gpt2_dir), "--mode", "policy", "--envelope", "--steps", "4",
                    "--task-seed", "1000", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    acted = np.asarray(rows["learned"]["actions"])
    assert acted.shape[0] == envelope.phases == 2
    assert (acted >= np.asarray(envelope.low) - 1e-6).all() and (acted <= np.asarray(envelope.high) + 1e-6).all()
    assert "actions" not in rows["default"]


def test_a_guarded_controller_holds_its_mean_actions_once_a_reading_is_unfamiliar_on_gpt2(
        controller_run, gpt2_dir, tmp_path):
    """--guard hold: each phase runs the controller's own action until a reading lies farther from its
    training readings than those lie from each other; from there on, its mean actions on them."""
    import numpy as np

    from metactl.policies.guard import ObservationGuard

    guard = ObservationGuard.load(controller_run / "guard.json")
    out = tmp_path / "g"
    res = _transfer(str(controller_run), "--model", str(gpt2_dir), "--mode", "policy", "--guard", "hold",
                    "--steps", "4", "--task-seed", "1000", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    acted = np.asarray(rows["learned"]["actions"])
    assert acted.shape[0] == guard.phases == 2
    fell = [bool(np.allclose(a, guard.fallback[p], atol=1e-6)) for p, a in enumerate(acted)]
    assert fell == sorted(fell)  # held: no closed-loop phase after a fallback


def test_a_bandit_controller_transfers_closed_loop_too(gpt2_dir, tmp_path):
    """The bandit acts once per task, from the target's base scores and task features."""
    src = _train(tmp_path / "bandit", "bandit")
    out = tmp_path / "b"
    res = _transfer(str(src), "--model", str(gpt2_dir), "--mode", "policy", "--steps", "4", "--task-seed", "1001",
                    "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"learned", "default"} and len(rows["learned"]["schedule"]["phases"]) == 2


# -- bad input: a clear message, exit 2, no weights read ------------------------------------------------
def _schedule_run(tmp_path: Path, schedule_text: str | None) -> Path:
    from metactl.policies.config import load_controller_config

    d = tmp_path / "src"
    d.mkdir()
    # A run of PPO alone: a searched start's dir also holds search/ (its own case below).
    (d / "config.yaml").write_text(load_controller_config(None, ["ppo.search_episodes=0"]).to_commented_yaml())
    if schedule_text is not None:
        (d / "schedule.yaml").write_text(schedule_text)
    return d


def _unmappable_model(tmp_path: Path, layers: int = 2, model_type: str = "llama") -> Path:
    from transformers import LlamaConfig, MambaConfig

    d = tmp_path / f"{model_type}-{layers}"
    if model_type == "mamba":
        MambaConfig(vocab_size=64, hidden_size=16, state_size=4, num_hidden_layers=layers).save_pretrained(d)
    else:
        LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                    num_attention_heads=2, num_key_value_heads=2).save_pretrained(d)
    return d  # config.json only: loading weights from here would fail with another message


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not_a_dir", "does not exist"),
        ("no_config", "no config.yaml"),
        ("no_schedule", "no schedule.yaml"),
        ("no_controller", "no controller.zip"),
        ("schema", "schema_version 99 is not supported"),
        ("steps0", "--steps: got 0"),
        ("too_few_layers", "too few for layer_groups=2"),
        ("no_kinds", "could not find both attention and MLP"),
        ("unknown_model", "unknown model"),
        ("policy_groups", "needs the same grouping"),
        ("envelope_open_loop", "pass --mode policy, or drop --envelope"),
        ("no_envelope", "has no envelope.json"),
        ("envelope_bandit", "needs a ppo controller"),
        ("guard_open_loop", "pass --mode policy, or drop --guard"),
        ("no_guard", "has no guard.json"),
        ("guard_and_envelope", "pick one"),
        ("guard_unknown", "Did you mean 'hold'"),
        ("search_unfinished", "the search stage did not finish"),
    ],
)
def test_bad_input_fails_before_weights_load(tmp_path, no_weights, case, message):
    expert = (Path(__file__).resolve().parents[1] / "configs" / "schedules" / "expert.yaml").read_text()
    model, extra = "proxy-large", []
    if case == "not_a_dir":
        src = tmp_path / "missing"
    elif case == "no_config":
        (src := tmp_path / "empty").mkdir()
    elif case == "no_schedule":
        src = _schedule_run(tmp_path, None)
    elif case in ("no_controller", "policy_groups", "no_envelope", "envelope_bandit", "no_guard", "guard_and_envelope",
                  "guard_unknown", "search_unfinished"):
        src = _schedule_run(tmp_path, expert)
        extra = ["--mode", "policy"]
        if case == "envelope_bandit":
            from metactl.policies.config import load_controller_config

            (src / "config.yaml").write_text(load_controller_config(None, ["policy=bandit"]).to_commented_yaml())
            (src / "controller.zip").write_bytes(b"")
            extra.append("--envelope")
        if case == "no_envelope":
            (src / "controller.zip").write_bytes(b"")
            extra.append("--envelope")
        if case in ("no_guard", "guard_and_envelope", "guard_unknown"):
            (src / "controller.zip").write_bytes(b"")
            extra += {"no_guard": ["--guard", "phase"], "guard_and_envelope": ["--guard", "hold", "--envelope"],
                      "guard_unknown": ["--guard", "hodl"]}[case]
        if case == "search_unfinished":  # killed in its search: RUN/search/ holds no schedule yet
            from metactl.policies.config import load_controller_config

            (src / "config.yaml").write_text(load_controller_config(None, []).to_commented_yaml())
            (src / "search").mkdir()
        if case == "policy_groups":
            (src / "controller.zip").write_bytes(b"")
            extra += ["--set", "run.training.layer_groups=3"]
    elif case == "schema":
        src = _schedule_run(tmp_path, expert.replace("schema_version: 1", "schema_version: 99"))
    else:
        src = _schedule_run(tmp_path, expert)
        if case == "steps0":
            extra = ["--steps", "0"]
        elif case == "too_few_layers":
            model = str(_unmappable_model(tmp_path, layers=1))
            extra = ["--set", "run.training.layer_groups=2"]
        elif case == "no_kinds":
            model = str(_unmappable_model(tmp_path, layers=4, model_type="mamba"))
        elif case == "unknown_model":
            model = "proxy-lrage"
        elif case == "envelope_open_loop":
            extra = ["--envelope"]
        elif case == "guard_open_loop":
            extra = ["--guard", "phase"]
    res = _transfer(str(src), "--model", model, *extra, "--out", str(tmp_path / "out"))
    assert res.exit_code == 2, res.output
    assert message in res.output, res.output
    if case == "unknown_model":
        assert "Did you mean 'proxy-large'" in res.output
    assert not (tmp_path / "out").exists()


def test_preflight_maps_a_model_folder_without_reading_weights(tmp_path):
    d = _unmappable_model(tmp_path, layers=6)
    lm = preflight_layer_map(str(d), 2)
    assert [lm.layers_of_group(g) for g in range(2)] == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ConfigError, match="too few"):
        preflight_layer_map(str(d), 7)


def test_a_bare_schedule_file_transfers_in_schedule_mode_only(tmp_path):
    from metactl.commands.transfer.source import load_source

    path = tmp_path / "s.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "configs" / "schedules" / "expert.yaml", path)
    assert load_source(path, "schedule").schedule is not None
    with pytest.raises(ConfigError, match="carries no controller"):
        load_source(path, "policy")
