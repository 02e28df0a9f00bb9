"""``merge`` as a schedule action: schema 2, the fold itself, references after it, run dirs, envs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from metactl.errors import ConfigError
from metactl.schedule import Merge, Schedule, parse_schedule


@pytest.fixture(autouse=True)
def _model_as_loaded(request):
    """The session's engine is shared with other files on this worker: leave it unmerged."""
    yield
    if "engine" in request.fixturenames:
        request.getfixturevalue("engine").restore_base()


def _sched(merge=None, version: int = 2, second: dict | None = None) -> Schedule:
    first = {"fraction": 0.5, "tools": {"sft": {"share": 1}}}
    if merge is not None:
        first["merge"] = merge
    return parse_schedule({"schema_version": version, "phases": [
        first, {"fraction": 0.5, "tools": second or {"dpo": {"share": 1}, "retain": {"share": 0.3}}}]})


# -- schema ---------------------------------------------------------------------------------------------
def test_schema_2_round_trips_and_a_schedule_without_merges_stays_version_1(tmp_path):
    s = _sched({"tools": ["sft"], "coefficient": 0.5, "toward_init": 0.25})
    assert s.phases[0].merge == Merge(["sft"], 0.5, 0.25) and s.phases[1].merge is None and s.merges
    s.save(tmp_path / "m.yaml")
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["schema_version"] == 2
    assert Schedule.load(tmp_path / "m.yaml") == s
    assert _sched(["sft"]).to_dict()["phases"][0]["merge"] == ["sft"]  # the short form when it says all
    assert _sched("sft").phases[0].merge == Merge(["sft"])
    plain = _sched(version=1)
    assert plain.to_dict()["schema_version"] == 1 and not plain.merges  # version-1 files stay byte-identical
    assert s.regroup(2).phases[0].merge == s.phases[0].merge


@pytest.mark.parametrize(("merge", "version", "message"), [
    (["sft"], 1, "'merge' is a schema_version 2 field, but this schedule says schema_version 1"),
    (["sfd"], 2, "unknown merge target 'sfd'; the schedule's tools are sft, dpo, retain"),
    (["grpo"], 2, "unknown merge target 'grpo'"),
    ({"tools": ["sft"], "coefficent": 1}, 2, "Did you mean 'coefficient'"),
    ({"tools": ["sft"], "coefficient": -1}, 2, "coefficient"),
    ({"tools": ["sft"], "toward_init": 1.5}, 2, "toward_init"),
    (3, 2, "expected a list of tools"),
])
def test_bad_merges_are_named(merge, version, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _sched(merge, version)


def test_bad_merge_fails_on_the_cli_before_weights_load(tmp_path, no_weights):
    from metactl.commands.cli import app

    path = tmp_path / "s.yaml"
    path.write_text("schema_version: 1\nphases: [{fraction: 1.0, tools: {sft: {}}, merge: [sft]}]\n")
    res = CliRunner().invoke(app, ["run-schedule", "--schedule", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "schema_version 2 field" in res.output


# -- the fold -----------------------------------------------------------------------------------------
def _train_sft(engine, seed: int = 2):
    ep = engine.episode(seed)
    ep.run_phase(_sched().phases[0], 8, score=False)
    return ep


def test_a_merge_keeps_the_function_restarts_the_adapter_and_rebases_the_references(engine):
    ep = _train_sft(engine)
    ids = engine.task.tools["sft"].data.input_ids[:4]
    dpo = engine.task.tools["dpo"]
    base_ref = dpo.ref.clone()
    base_scores = dict(engine.task.base_scores)
    with torch.no_grad():
        before = engine.model(input_ids=ids).logits
    assert ep.losses.last  # the sft steps were recorded ...
    ep.merge(["sft"])
    assert not ep.losses.last and not ep.losses.best  # ... and max-gap's memory starts afresh after a merge
    assert engine.adapters.merged and "sft" not in ep.trained
    assert max(engine.adapters.norms()["sft"]) == 0.0  # the adapter restarted from B = 0
    engine.adapters.activate(engine.tool_names)
    with torch.no_grad():
        after = engine.model(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    # DPO's reference is now the merged model (what a trainer started on the merged checkpoint uses) ...
    assert not torch.allclose(dpo.ref, base_ref)
    from metactl.adapters import base_only
    from metactl.forward import chunked_completion_logprobs

    with torch.no_grad(), base_only(engine.model):
        torch.testing.assert_close(dpo.ref, chunked_completion_logprobs(engine.model, dpo.data))
    # ... while what the reported scores compare with is the model as loaded.
    engine.task._base = None
    assert engine.task.base_scores == base_scores
    # The next episode starts from the model as loaded, its references too.
    engine.episode(0)
    assert not engine.adapters.merged
    torch.testing.assert_close(dpo.ref, base_ref)


def test_toward_init_one_undoes_the_merge(engine):
    weights = engine.adapters.base_weights()
    ep = _train_sft(engine)
    ep.merge(["sft"], coefficient=1.0, toward_init=1.0)
    for name, w in engine.adapters.base_weights().items():
        torch.testing.assert_close(w, weights[name])
    ep2 = _train_sft(engine)
    ep2.merge(["sft"], coefficient=0.5, toward_init=0.5)  # W0 + 0.5 * (0.5 * delta)
    moved = engine.adapters.base_weights()
    assert any(not torch.allclose(moved[n], weights[n]) for n in weights)
    engine.restore_base()


def test_merging_runs_are_deterministic_and_leave_no_trace_in_the_next_run(engine):
    plain, merged = _sched(), _sched(["sft"])
    fresh = engine.run(plain, seed=4)
    a = engine.run(merged, seed=4)
    b = engine.run(merged, seed=4)
    assert [r.scores for r in a] == [r.scores for r in b]
    assert a[-1].scores != fresh[-1].scores  # DPO and retain now start from the merged model
    assert [r.scores for r in engine.run(plain, seed=4)] == [r.scores for r in fresh]


def test_interrupted_merging_run_resumes_to_identical_results(engine, tmp_path):
    sched = parse_schedule({"schema_version": 2, "phases": [
        {"fraction": 0.25, "tools": {"sft": {}}, "merge": ["sft"]},
        {"fraction": 0.25, "tools": {"dpo": {}}, "merge": {"tools": ["dpo"], "toward_init": 0.3}},
        {"fraction": 0.5, "tools": {"sft": {}, "dpo": {}, "retain": {"share": 0.3}}},
    ]})
    full = engine.run(sched, seed=3)

    class Interrupt(Exception):
        pass

    def stop(res):
        if res.phase == 1:
            raise Interrupt

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupt):
        engine.run(sched, seed=3, checkpoint=ckpt, on_phase=stop)
    engine.run(_sched(), seed=9)  # another episode in between: the engine's base is restored
    resumed = engine.run(sched, seed=3, checkpoint=ckpt)
    assert [r.scores for r in resumed] == [r.scores for r in full]
    assert [r.norms for r in resumed] == [r.norms for r in full]


def test_merged_run_dir_reloads_with_plain_transformers_and_peft(engine, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from metactl.adapters import MERGED_BASE
    from metactl.commands.run_schedule import write_run_dir
    from metactl.rundir import SCORES, read_jsonl

    sched = _sched({"tools": ["sft"], "coefficient": 0.8, "toward_init": 0.1})
    results = engine.run(sched, seed=1)
    out = write_run_dir(tmp_path / "run", engine.config, sched, engine, results, seed=1)
    final = read_jsonl(out / SCORES)[-1]["scores"]
    base = AutoModelForCausalLM.from_pretrained(out / "adapters" / MERGED_BASE).eval()
    tools = engine.tool_names
    model = PeftModel.from_pretrained(base, str(out / "adapters" / tools[0]), adapter_name=tools[0])
    for t in tools[1:]:
        model.load_adapter(str(out / "adapters" / t), adapter_name=t)
    model.base_model.set_adapter(tools)
    rescored = engine.task.scorer.score(model)
    for key in ("target/style", "target/truth", "heldout/style", "heldout/truth", "composite", "stability"):
        assert rescored[key] == pytest.approx(final[key], abs=1e-4), key
    assert Schedule.load(out / "schedule.yaml") == sched
    # A run that did not merge writes no merged base.
    plain = write_run_dir(tmp_path / "plain", engine.config, _sched(), engine, engine.run(_sched(), seed=1), seed=1)
    assert not (plain / "adapters" / MERGED_BASE).exists()
    import json

    named = json.loads((out / "adapters" / "sft" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert named.startswith(MERGED_BASE)  # not the model as loaded, which a loader would silently take


def test_merge_on_conv1d_modules_keeps_the_function(tmp_path):
    """GPT-2 stores its weights transposed (fan_in_fan_out): the fold must follow peft's layout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from metactl.config import load_config
    from metactl.proxy_language import build_tokenizer
    from metactl.runner import Engine

    tok = build_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    eng = Engine(load_config(None, [f"model={tmp_path}", "training.total_steps=8", "training.layer_groups=2"]),
                 progress=False)
    ep = eng.episode(0)
    ep.run_phase(_sched().regroup(2).phases[0], 4, score=False)
    ids = eng.task.tools["sft"].data.input_ids[:2]
    with torch.no_grad():
        before = eng.model(input_ids=ids).logits
    ep.merge(["sft"])
    with torch.no_grad():
        after = eng.model(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


# -- where merges may run -------------------------------------------------------------------------------
def test_the_population_engine_refuses_to_merge():
    from metactl.population import check_no_merge

    with pytest.raises(ConfigError, match="does not merge adapters"):
        check_no_merge(_sched(["sft"]).merges)


def test_controller_config_picks_an_engine_per_env_for_merges(tmp_path):
    from metactl.policies.config import load_controller_config

    cfg = load_controller_config(None, ["env.merge=[sft]"])
    assert cfg.resolved_vec_env() in ("subproc", "dummy")
    with pytest.raises(ConfigError, match="does not merge adapters"):
        load_controller_config(None, ["env.merge=[sft]", "vec_env=batched"])
    with pytest.raises(ConfigError, match="Did you mean 'sft'"):
        load_controller_config(None, ["env.merge=[sfft]"])
    path = tmp_path / "m.yaml"
    _sched(["sft"]).save(path)
    with pytest.raises(ConfigError, match="compare schedule"):
        load_controller_config(None, [f"compare=[{path}]", "vec_env=batched"])
    assert load_controller_config(None, [f"compare=[{path}]"]).resolved_vec_env() in ("subproc", "dummy")
    with pytest.raises(ConfigError, match="a prior may not merge"):
        load_controller_config(None, [f"env.prior={path}"])


# -- action spaces ------------------------------------------------------------------------------------------
def test_action_spaces_decide_merges_and_the_zero_action_keeps_the_prior():
    from metactl.envs.spaces import PhaseControlSpace, ScheduleSpace, apply_residual

    one = PhaseControlSpace(("sft", "dpo", "retain"), 2, merge=("sft",))
    assert one.dim == 3 * 9 + 1 and one.labels()[-1] == "sft.merge"
    prior = _sched().regroup(2)
    code = one.encode(prior.phases[0])
    assert code[-1] == -0.5 and one.phase(apply_residual(code, np.zeros(one.dim)), 0.5).merge is None
    push = np.zeros(one.dim)
    push[-1] = 0.2  # -0.5 + 2 * 0.2 < 0: still no merge
    assert one.phase(apply_residual(code, push), 0.5).merge is None
    push[-1] = 0.3  # a residual above 0.25 merges
    assert one.phase(apply_residual(code, push), 0.5).merge == Merge(["sft"])
    assert one.encode(_sched(["sft"]).regroup(2).phases[0])[-1] == 0.5
    assert one.neutral()[-1] == -0.5 and not one.neutral()[:-1].any()

    whole = ScheduleSpace(("sft", "dpo", "retain"), 2, 2, merge=("sft", "dpo"))
    assert whole.dim == 2 * 3 + 3 * 2 * 4 + 2 * 2
    target = _sched({"tools": ["sft", "dpo"]}).regroup(2)
    decoded = whole.schedule(whole.encode(target))
    assert decoded.phases[0].merge == Merge(["sft", "dpo"]) and decoded.phases[1].merge is None
    assert whole.labels()[-4:] == ["phase0.sft.merge", "phase0.dpo.merge", "phase1.sft.merge", "phase1.dpo.merge"]


def test_phase_env_runs_the_merges_its_actions_ask_for(engine):
    from metactl.envs.config import EnvConfig
    from metactl.envs.phase_env import PhaseControlEnv

    env = PhaseControlEnv(engine.config, EnvConfig(phases=2, merge=["sft"], quick_probes=4), engine=engine)
    assert env.observer.labels and env.action_space.shape == (env.controls.dim,)
    env.reset(seed=0)
    action = np.zeros(env.controls.dim, dtype=np.float32)
    action[-1] = 1.0
    _, _, _, _, info = env.step(action)
    assert info["controls"]["merge"] == ["sft"] and engine.adapters.merged
    _, _, _, truncated, info = env.step(np.zeros(env.controls.dim, dtype=np.float32))
    assert truncated and "merge" not in info["controls"]
    assert env.schedule().phases[0].merge == Merge(["sft"])
    env.reset(seed=0)
    assert not engine.adapters.merged
    with pytest.raises(ConfigError, match="not a tool this run trains"):
        PhaseControlEnv(engine.config, EnvConfig(phases=2, merge=["grpo"]), engine=engine)


def test_shapley_attributes_merged_parts_to_their_tools(engine):
    """After SFT is merged and DPO trained on top, switching SFT off removes its merged part too."""
    from metactl.commands.inspect.ablate import ModelAblation, kept_scores
    from metactl.commands.inspect.shapley import shapley

    results = engine.run(_sched(["sft"]), seed=5)
    ablation = ModelAblation(engine)
    table = ablation.tool_table()
    everything = frozenset(engine.tool_names)
    final, base = kept_scores(results[-1].scores), kept_scores(engine.task.base_scores)
    for key in ("composite", "heldout/style", "stability"):
        assert table[everything][key] == pytest.approx(final[key], abs=1e-4)
        assert table[frozenset()][key] == base[key]
    # SFT's whole effect sits in the base: without it, only DPO and retain's adapters act, on the initial base.
    assert table[frozenset({"sft"})]["kl"] > 0  # SFT's adapter is back at zero: this is its merged part
    assert table[frozenset({"dpo", "retain"})]["kl"] < table[everything]["kl"]
    values = {t: v["kl"] for t, v in shapley(engine.tool_names, table).items()}
    assert values["sft"] > 0
    assert sum(values.values()) == pytest.approx(table[everything]["kl"] - base["kl"], abs=1e-6)
    assert engine.adapters.merged  # the ablation restored the merged model


def test_inspect_shows_merge_decisions():
    from metactl.commands.inspect.rollout import Trace, flat_phase
    from metactl.commands.inspect.sections import decisions
    from metactl.commands.inspect.tables import decision_table

    sched = _sched({"tools": ["sft"], "coefficient": 0.5}).regroup(2)
    report = {"decisions": {"learned": decisions(Trace("learned", sched, {}, {}), 24)}, "layer_groups": 2,
              "task_seed": 0}
    _, headers, rows = decision_table(report, "learned")
    assert headers[-1] == "merged after"
    assert [r[-1] for r in rows if r[0] == "0"] == ["yes", "-", "-"] and {r[-1] for r in rows if r[0] == "1"} == {"-"}
    assert report["decisions"]["learned"]["phases"][0]["merge"] == {"tools": ["sft"], "coefficient": 0.5,
                                                                   "toward_init": 0.0}
    _, plain_headers, _ = decision_table({**report, "decisions": {"d": decisions(Trace("d", _sched(), {}, {}), 24)}},
                                         "d")
    assert "merged after" not in plain_headers  # no column where nothing merges
    assert flat_phase(sched.phases[0], merge_tools=("sft", "dpo"))["dpo merge"] == 0.0
    assert flat_phase(sched.phases[0])["sft merge"] == 1.0


def test_run_schedule_with_grpo_and_merges_on_the_cli(tmp_path):
    from metactl.commands.cli import app

    path = tmp_path / "s.yaml"
    path.write_text(
        "schema_version: 2\nphases:\n"
        "  - {fraction: 0.5, tools: {sft: {share: 1}}, merge: [sft]}\n"
        "  - {fraction: 0.25, tools: {grpo: {share: 1}}, merge: {tools: [grpo], toward_init: 0.5}}\n"
        "  - {fraction: 0.25, tools: {dpo: {share: 1}}}\n"
    )
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run-schedule", "--schedule", str(path), "--set", "tools.grpo={}", "--set",
                                   "training.total_steps=8", "--set", "training.score_probes=8", "--out", str(out),
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    assert (out / "adapters" / "merged_base" / "config.json").is_file() and (out / "adapters" / "grpo").is_dir()
    assert Schedule.load(out / "schedule.yaml").phases[1].merge == Merge(["grpo"], 1.0, 0.5)
    assert "merge (a schedule action" in CliRunner().invoke(app, ["tools"]).output
