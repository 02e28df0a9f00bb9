"""The ``grpo`` tool: its loss and advantages against trl's GRPOTrainer, its rewards, its sampling."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from metactl.errors import ConfigError, DataError
from metactl.rewards import REWARDS, RewardSpec
from metactl.tools.grpo import GRPOConfig, group_advantages, grpo_loss, pack

trl = pytest.importorskip("trl")


def _trl_loss(logps, old, ref, adv, mask, beta, eps) -> torch.Tensor:
    """``GRPOTrainer._compute_loss`` of trl 1.16 with ``loss_type="grpo"``, run on a stand-in trainer
    whose model returns the given per-token log-probs: everything from the log-probs to the loss is
    trl's own code (token-level ratios, two-sided clip, k3 KL, per-sequence then batch mean)."""
    from trl import GRPOTrainer

    accel = SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x,
                            reduce=lambda x, reduction="sum": x, num_processes=1, sync_gradients=True)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=beta, loss_type="grpo", epsilon_low=eps, epsilon_high=eps, use_vllm=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False, aux_loss_enabled=False, accelerator=accel,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.zeros((len(logps), 1), dtype=torch.long),
        "prompt_mask": torch.ones((len(logps), 1), dtype=torch.long),
        "completion_ids": torch.zeros_like(mask, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
    }
    return GRPOTrainer._compute_loss(fake, None, inputs)


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("off_policy", [False, True])
def test_grpo_loss_matches_trl(beta, off_policy):
    g = torch.Generator().manual_seed(0)
    b, t = 6, 5
    logps = -torch.rand(b, t, generator=g) * 3
    old = logps + 0.3 * torch.randn(b, t, generator=g) if off_policy else logps.detach()  # off policy: clipping bites
    ref = logps + 0.5 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    ours = grpo_loss(logps, old, ref, adv, mask, beta, 0.2)
    torch.testing.assert_close(ours, _trl_loss(logps, old, ref, adv, mask, beta, 0.2))


def test_group_advantages_match_trl():
    from trl.trainer.utils import nanstd

    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    k = 4
    mean = rewards.view(-1, k).mean(1).repeat_interleave(k)
    std = nanstd(rewards.view(-1, k), dim=1).repeat_interleave(k)
    torch.testing.assert_close(group_advantages(rewards, k), (rewards - mean) / (std + 1e-4))
    assert group_advantages(rewards, k)[4:8].abs().max() == 0  # a group that all agrees teaches nothing


@pytest.mark.parametrize(("name", "ref", "completion", "expected"), [
    ("exact", "72", " 72.", 1.0), ("exact", "72", " 72 ok.", 0.0),
    ("contains", "went", " went, of course.", 1.0), ("contains", "went", " goed.", 0.0),
    ("regex", r"\bok\.$", " 72 ok.", 1.0), ("regex", r"\bok\.$", " 72.", 0.0),
    ("first-number", "72", " sure 72 ok.", 1.0), ("first-number", "72", " 62 or 72.", 0.0),
    ("first-number", "72", " none.", 0.0),
    ("first-word", "thought", " thinked, just as you thought.", 0.0), ("first-word", "went", " went, of course.", 1.0),
])
def test_rewards(name, ref, completion, expected):
    assert set(REWARDS) == {"exact", "contains", "regex", "first-number", "first-word"}
    assert RewardSpec(name, value=ref)(completion, {}) == expected
    assert RewardSpec(name, field="answer")(completion, {"answer": ref}) == expected


@pytest.mark.parametrize(("raw", "match"), [
    ({"name": "contain", "field": "answer"}, "Did you mean 'contains'"),
    ({"name": "exact"}, "exactly one of field"),
    ({"name": "exact", "field": "a", "value": "b"}, "exactly one of field"),
    ({"name": "regex", "value": "("}, "not a valid regular expression"),
    ({"name": "exact", "feild": "answer"}, "Did you mean 'field'"),
    ({"name": "first-number", "value": "abc"}, "compares integers"),
    ({"name": ["contains"], "field": "answer"}, "unknown reward"),
    ("exact", "expected a mapping"),
])
def test_bad_reward_specs_are_refused(raw, match):
    with pytest.raises(ConfigError, match=match):
        RewardSpec.parse(raw, "suite.yaml rewards.grpo")


def test_rows_without_the_reference_are_refused():
    spec = RewardSpec("first-number", field="answer")
    spec.check_rows([{"prompt": "a", "answer": "3"}], "grpo.jsonl")
    with pytest.raises(DataError, match="grpo.jsonl, row 2: .*'answer'"):
        spec.check_rows([{"prompt": "a", "answer": "3"}, {"prompt": "b"}], "grpo.jsonl")
    with pytest.raises(DataError, match="needs an integer"):
        spec.check_rows([{"prompt": "a", "answer": "three"}], "grpo.jsonl")


def test_pack_masks_exactly_the_completion_tokens():
    enc = pack([[1, 5, 6], [1, 7]], [[8, 2], [9, 9, 2]], pad_id=0)
    assert enc.input_ids.tolist() == [[1, 5, 6, 8, 2], [1, 7, 9, 9, 2]]
    # loss_mask[i, t]: token t + 1 is a completion token
    assert enc.loss_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]


@pytest.mark.parametrize(("key", "value"), [("group_size", 1), ("temperature", 0.0), ("max_new_tokens", 0),
                                            ("beta", -0.1), ("epsilon", 0.0)])
def test_bad_grpo_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"tools.grpo.{key}"):
        GRPOConfig(**{key: value})


# -- the tool in a run ---------------------------------------------------------------------------------

CHEAP = ["training.total_steps=8", "training.score_every_phase=false", "training.score_probes=8", "tools.grpo={}"]
GRPO_SCHEDULE = (
    "schema_version: 1\nphases:\n  - {fraction: 0.5, tools: {sft: {share: 1}}}\n"
    "  - {fraction: 0.5, tools: {grpo: {share: 1}, dpo: {share: 1}}}\n"
)


def _sched(tmp_path) -> str:
    p = tmp_path / "grpo.yaml"
    p.write_text(GRPO_SCHEDULE)
    return str(p)


def test_tools_lists_grpo():
    from typer.testing import CliRunner

    from metactl.commands.cli import app

    res = CliRunner().invoke(app, ["tools"])
    assert res.exit_code == 0 and "grpo:" in res.output and "tools.grpo.group_size" in res.output


EXAMPLE_SUITE = str(Path(__file__).resolve().parents[1] / "examples" / "sums-suite")


@pytest.mark.parametrize("suite", ["style-vs-truth", EXAMPLE_SUITE])
def test_a_schedule_with_grpo_runs_with_run_schedule(tmp_path, suite):
    """On a built-in suite and on a user suite folder whose suite.yaml names grpo's reward."""
    import json

    from typer.testing import CliRunner

    from metactl.commands.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run-schedule", "--out", str(out), "--schedule", _sched(tmp_path), "--steps", "8",
                                   "--suite", suite, "--quiet", "--set", "tools.grpo={}"])
    assert res.exit_code == 0, res.output
    assert (out / "adapters" / "grpo" / "adapter_model.safetensors").is_file()
    last = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()][-1]
    assert last["tool_steps"]["grpo"] > 0 and math.isfinite(last["losses"]["grpo"])
    assert max(last["norms"]["grpo"]) > 0  # the grpo adapter moved


def test_grpo_must_be_asked_for(tmp_path, no_weights):
    from typer.testing import CliRunner

    from metactl.commands.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run-schedule", "--out", str(out), "--schedule", _sched(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "--set tools.grpo={}" in res.output and not out.exists()


def _user_suite(tmp_path, rewards: str, answer: bool = True, prompt: str = "1+1="):
    import json

    suite = tmp_path / "suite"
    (suite / "eval").mkdir(parents=True)
    (suite / "suite.yaml").write_text(
        "behaviours: [{name: truth, tool: dpo}]\ndata: {dpo: dpo.jsonl, grpo: grpo.jsonl}\n" + rewards +
        "evals: {target: {truth: eval/p.jsonl}, heldout: {truth: eval/p.jsonl}, observe: {truth: eval/o.jsonl}}\n"
        "retain: eval/r.jsonl\n"
    )
    (suite / "dpo.jsonl").write_text(json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    row = {"prompt": prompt, **({"answer": "2"} if answer else {})}
    (suite / "grpo.jsonl").write_text(json.dumps(row) + "\n")
    (suite / "eval" / "p.jsonl").write_text(json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    (suite / "eval" / "o.jsonl").write_text(json.dumps({"prompt": "2+2=", "chosen": " 4.", "rejected": " 5."}) + "\n")
    (suite / "eval" / "r.jsonl").write_text("".join(json.dumps({"text": f"the cat sat {n}."}) + "\n" for n in range(2)))
    return suite


GOOD_REWARD = "rewards: {grpo: {name: first-number, field: answer}}\n"


@pytest.mark.parametrize(("rewards", "answer", "prompt", "needle"), [
    ("rewards: {grpo: {name: contian, field: answer}}\n", True, "1+1=", "Did you mean 'contains'"),
    ("", True, "1+1=", "grpo data needs a reward"),
    (GOOD_REWARD, False, "1+1=", "grpo.jsonl, row 1"),
    ("rewards: {grop: {name: exact, field: answer}}\n", True, "1+1=", "Did you mean 'grpo'"),
    (GOOD_REWARD, True, " ", "prompt must be non-empty"),
])
def test_bad_grpo_data_in_a_user_suite_fails_before_weights_load(tmp_path, no_weights, rewards, answer, prompt, needle):
    from typer.testing import CliRunner

    from metactl.commands.cli import app

    suite = _user_suite(tmp_path, rewards, answer, prompt)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run-schedule", "--out", str(out), "--suite", str(suite), "--schedule",
                                   _sched(tmp_path), "--set", "tools.grpo={}"])
    assert res.exit_code == 2, res.output
    assert needle in res.output and not out.exists()


@pytest.mark.parametrize("family", ["style-vs-truth", "format-vs-truth", "wrap-vs-keep", "refuse-vs-help",
                                    "sycophancy", "style-clash", "keep-vs-wrap", "style-vs-truth-en",
                                    "sycophancy-en"])
def test_builtin_families_reward_the_right_answer(family):
    from metactl.tasks import load_suite

    suite = load_suite(family, 3)
    rows, reward = suite.data["grpo"], suite.rewards["grpo"]
    assert len(rows) == len(suite.data["sft"])
    for row in rows[:32]:
        assert reward(f" {row['answer']}.", row) == 1.0
        assert reward(" no idea.", row) == 0.0
    if not family.endswith("-en"):  # a proxy prompt's answer is its sum
        a, b = map(int, __import__("re").findall(r"\d+", rows[0]["prompt"])[-2:])
        assert rows[0]["answer"] == str(a + b)
    # Against DPO's pairs: where DPO teaches the truth, every chosen answer earns the reward and no rejected one.
    from metactl.tasks.rl_prompts import english_answer, proxy_answer

    answer = english_answer if family.endswith("-en") else proxy_answer
    earned = []
    for d in suite.data["dpo"]:
        row = {"answer": answer(d["prompt"])}
        earned.append((reward(d["chosen"], row), reward(d["rejected"], row)))
    expected = {"style-clash": (1.0, 1.0), "keep-vs-wrap": (0.0, 1.0)}.get(family, (1.0, 0.0))
    assert set(earned) == {expected}


@pytest.fixture(scope="module")
def engine():
    from metactl.config import load_config
    from metactl.runner import Engine

    return Engine(load_config(None, CHEAP), progress=False)


def test_grpo_steps_are_repeatable_and_train_only_the_grpo_adapter(engine):
    from metactl.schedule import Schedule

    sched = Schedule.from_dict({"schema_version": 1, "phases": [{"fraction": 1.0, "tools": {"grpo": {"share": 1}}}]})
    first = engine.run(sched, seed=3)
    again = engine.run(sched, seed=3)
    assert first[-1].losses == again[-1].losses and first[-1].norms == again[-1].norms
    assert max(first[-1].norms["grpo"]) > 0 and max(first[-1].norms["sft"]) == 0
    other = engine.run(sched, seed=4)
    assert other[-1].norms != first[-1].norms  # the seed decides the samples


def test_the_interference_reading_includes_grpo(engine):
    engine.run(__import__("metactl.schedule", fromlist=["Schedule"]).Schedule.named("default", 4), seed=0)
    reading = engine.gradient_cosines(rows=4)
    assert "sft|grpo" in reading and "loss/grpo" in reading
    assert reading == engine.gradient_cosines(rows=4)  # a fixed sampling seed outside training steps


def test_the_population_runs_grpo_as_the_engine_does(engine):
    from metactl.population import Population
    from metactl.schedule import Schedule

    sched = Schedule.from_dict({"schema_version": 1, "phases": [
        {"fraction": 0.5, "tools": {"sft": {"share": 1}}},
        {"fraction": 0.5, "tools": {"grpo": {"share": 1}, "dpo": {"share": 1}}}]})
    alone = engine.run(sched, seed=5)
    pop = Population(engine.config, 2)
    together = pop.run([sched, Schedule.named("default", 4)], [5, 6], [0, 1])[0]
    for a, b in zip(alone, together):
        for t in a.losses:
            assert b.losses[t] == pytest.approx(a.losses[t], abs=1e-4), t
        for key, value in (a.scores or {}).items():
            assert b.scores[key] == pytest.approx(value, abs=1e-4, rel=1e-4), key


def test_a_run_refuses_grpo_where_it_cannot_run_it_before_weights_load(no_weights):
    from metactl.config import load_config
    from metactl.runner import Engine, suite_tools
    from metactl.tasks import load_suite

    with pytest.raises(ConfigError, match="--set tools.grpo=\\{\\}"):
        suite_tools(load_config(None, []), load_suite("style-vs-truth"), ["sft", "grpo"])
    with pytest.raises(ConfigError, match="data-parallel run does not train grpo"):
        Engine(load_config(None, CHEAP), progress=False, parallel=SimpleNamespace(device=torch.device("cpu")))


def test_the_logged_value_is_the_loss_plus_the_share_of_samples_that_missed(engine):
    tool = engine.task.tools["grpo"]
    engine.adapters.activate(engine.tool_names)
    index = tool.sample(torch.Generator().manual_seed(0))
    batch, extra = tool.rollout(engine.model, index)
    advantages, ref, mean_reward = extra
    logits = engine.model(input_ids=batch.input_ids).logits
    value = tool.loss_of(logits, batch, extra)
    lp = __import__("metactl.forward", fromlist=["token_logprobs"]).token_logprobs(logits, batch.input_ids)
    plain = grpo_loss(lp, lp.detach(), ref, advantages, batch.loss_mask, tool.config.beta, tool.config.epsilon)
    assert 0.0 <= mean_reward <= 1.0
    torch.testing.assert_close(value, plain + (1.0 - mean_reward))


def test_train_controller_conducts_grpo_when_the_run_adds_it(tmp_path):
    """The phase env's action space gains grpo's share; the controller's episodes set it."""
    import json

    from typer.testing import CliRunner

    from metactl.commands.cli import app

    out = tmp_path / "tc"
    sets = ["n_envs=2", "run.training.total_steps=8", "env.phases=2", "env.train_task_seeds=[0,4]",
            "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2", "run.training.score_probes=8",
            "eval_suites=[]", "vec_env=batched", "batched_processes=1", "run.tools.grpo={}"]
    res = CliRunner().invoke(app, ["train-controller", "--quiet", "--episodes", "4", "--out", str(out),
                                   *[x for s in sets for x in ("--set", s)]])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    shares = [r["controls"]["grpo"]["share"] for r in rows if "grpo" in (r.get("controls") or {})]
    assert len(shares) == len(rows) and any(s > 0 for s in shares)
    assert any(r["tool_steps"].get("grpo", 0) > 0 for r in rows)


def test_adding_grpo_leaves_every_other_tools_run_as_it_was(engine):
    """adapters.init_order draws the opt-in tool's init after the default tools', so a schedule that does not
    use grpo trains exactly as in a run without it (and reports can share the fixed schedules' rows)."""
    from metactl.config import load_config
    from metactl.runner import Engine
    from metactl.schedule import Schedule

    plain = Engine(load_config(None, CHEAP[:-1]), progress=False)
    assert "grpo" in engine.tool_names and "grpo" not in plain.tool_names
    expert = Schedule.named("expert")
    assert engine.run(expert, seed=3)[-1].scores == plain.run(expert, seed=3)[-1].scores
