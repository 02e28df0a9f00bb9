"""The environments: gymnasium and SB3 contracts, residual prior, determinism, divergence."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from metactl import envs
from metactl.config import load_config
from metactl.envs.config import EnvConfig
from metactl.envs.observe import LOG_RATIO_BOUND
from metactl.envs.spaces import PhaseControlSpace, ScheduleSpace, apply_residual
from metactl.errors import ConfigError
from metactl.interference import is_cosine, pair_cosines
from metactl.schedule import Schedule

TINY_RUN = ["training.total_steps=4", "training.layer_groups=2"]
ENV_IDS = [envs.PHASE_ENV_ID, envs.BANDIT_ENV_ID]


@pytest.fixture(scope="module")
def made():
    """One env of each kind on a tiny budget and a single training task (cheap resets)."""
    run = load_config(None, TINY_RUN)
    return {i: gym.make(i, run=run, env=EnvConfig(phases=2, train_task_seeds=[0, 1])) for i in ENV_IDS}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_passes_gymnasium_and_sb3_checkers_without_warnings(made, env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = made[env_id].unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_observations_and_rewards(made, env_id):
    env = made[env_id].unwrapped
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-0.3, 0.3, env.action_space.shape).astype(np.float32) for _ in range(2)]

    def rollout():
        obs, info = env.reset(seed=7)
        out = [obs]
        for a in actions:
            obs, r, term, trunc, _ = env.step(a)
            out += [obs, np.array([r])]
            if term or trunc:
                break
        return out, info["task_seed"], info["episode_seed"]

    first, second = rollout(), rollout()
    assert first[1:] == second[1:]
    for x, y in zip(first[0], second[0]):
        np.testing.assert_array_equal(x, y)


def test_phase_env_return_is_final_minus_base_and_budget_end_truncates(made):
    """The shaped rewards telescope to the reported final composite minus the base's, checked
    against an independent run: the same schedule through the runner, and a fresh base scoring.
    (Made to fail once by paying the last phase the final minus base without taking back the shaping.)"""
    from metactl.adapters import base_only
    from metactl.scoring import Scorer

    env = made[envs.PHASE_ENV_ID].unwrapped
    obs, _ = env.reset(options={"task_seed": 0, "episode_seed": 11})
    total, flags = 0.0, []
    for _ in range(env.env_config.phases):
        obs, r, term, trunc, step_info = env.step(env.action_space.sample() * 0.2)
        total += r
        flags.append((term, trunc))
    assert flags == [(False, False), (False, True)]
    assert env.observation_space.contains(obs)

    engine = env.engine
    final = engine.run(env.schedule(), seed=11)[-1].scores["composite"]
    scorer = Scorer(engine.task.suite, engine.tokenizer, engine.config.reward)
    scorer.prepare(engine.model)
    with base_only(engine.model):
        base = scorer.score(engine.model)["composite"]
    assert total == pytest.approx(final - base, abs=1e-5)
    assert step_info["episode_return"] == pytest.approx(final - base, abs=1e-5)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_train_reward_reweighs_the_return_alone(made, env_id):
    """Under env.train_reward the return an episode adds up to is the reported score parts' gain with
    those weights, while info["episode_return"] and the scores stay the reported composite's: two envs
    on one engine, the same actions and seeds, so only the weights differ. (Made to fail once by
    leaving the last phase's reward on the reported composite.)"""
    from dataclasses import replace

    plain = made[env_id].unwrapped
    weights = {"heldout": 2.0, "stability": 0.5}
    tilted = type(plain)(plain.run_config, replace(plain.env_config, train_reward=weights), engine=plain.engine)
    rng = np.random.default_rng(3)
    actions = [rng.uniform(-0.3, 0.3, plain.action_space.shape).astype(np.float32) for _ in range(2)]

    def rollout(env):
        env.reset(options={"task_seed": 0, "episode_seed": 5})
        total = 0.0
        for a in actions:
            _, r, term, trunc, info = env.step(a)
            total += r
            if term or trunc:
                return total, info

    (ret, info), (tilted_ret, tilted_info) = rollout(plain), rollout(tilted)
    final = tilted.scores if env_id == envs.PHASE_ENV_ID else tilted_info["results"][-1]["scores"]
    base = plain.engine.task.base_scores
    parts = {"target": 1.0, "heldout": 2.0, "stability": 0.5}
    expected = sum(w * (final[p] - base[p]) for p, w in parts.items())
    assert tilted_ret == pytest.approx(expected, abs=1e-5)
    assert ret == pytest.approx(final["composite"] - base["composite"], abs=1e-5)
    assert tilted_info["episode_return"] == pytest.approx(info["episode_return"], abs=1e-9) == pytest.approx(ret)
    assert abs(tilted_ret - ret) > 1e-6  # the weights did change what the controller is paid


def test_train_reward_is_checked_before_any_weights_load():
    with pytest.raises(ConfigError, match="Did you mean 'heldout'"):
        EnvConfig(train_reward={"heldot": 2.0})
    with pytest.raises(ConfigError, match=r"env.train_reward.heldout: got -1"):
        EnvConfig(train_reward={"heldout": -1})
    from metactl.policies.config import load_controller_config

    with pytest.raises(ConfigError, match="env.train_reward .* all zero"):
        load_controller_config(None, ["env.train_reward={target: 0, heldout: 0, stability: 0}"])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_a_controller_reads_no_reported_probe_before_the_final_score(made, env_id, monkeypatch):
    """Between reset and the final phase only the observe split is scored; the reported probes
    (target, heldout, retain) are read once, after the last phase trained, base included. No
    observation entry is named after a held-out or test score. (Made to fail once by scoring the
    phases between on the reported scorer, as the quick scorer used to.)"""
    from metactl.scoring import Scorer

    env = made[env_id].unwrapped
    stage = ["before reset"]
    reads: list[tuple[str, bool]] = []
    score = Scorer.score

    def recording(self, model):
        reads.append((stage[0], self.observe))
        return score(self, model)

    monkeypatch.setattr(Scorer, "score", recording)
    # A task this module has not loaded, so the base's reported scores are not cached yet.
    _, info = env.reset(options={"task_seed": 7, "episode_seed": 0})
    labels = info["observation_labels"]
    assert len(labels) == env.observation_space.shape[0]
    assert not [x for x in labels if x.startswith(("target", "heldout")) or x in ("composite", "kl", "cka")]
    done, phase = False, 0
    while not done:
        stage[0] = f"step {phase}"
        *_, term, trunc, _ = env.step(np.zeros(env.action_space.shape, np.float32))
        done, phase = term or trunc, phase + 1
    last = f"step {phase - 1}"
    reported = [s for s, observe in reads if not observe]
    assert reported and set(reported) == {last}, reads
    assert any(observe for _, observe in reads)


def test_zero_action_reproduces_the_prior_schedule(made):
    """The action is a residual: 0 must run exactly the prior (here the default schedule)."""
    env = made[envs.PHASE_ENV_ID].unwrapped
    env.reset(options={"task_seed": 0, "episode_seed": 3})
    for _ in range(env.env_config.phases):
        *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
    prior = Schedule.named("default", 2)
    results = env.engine.run(prior, seed=3)
    assert info["result"]["scores"]["composite"] == pytest.approx(results[-1].scores["composite"], abs=1e-6)

    bandit = made[envs.BANDIT_ENV_ID].unwrapped
    bandit.reset(options={"task_seed": 0, "episode_seed": 3})
    _, reward, *_ = bandit.step(np.zeros(bandit.action_space.shape, np.float32))
    assert reward == pytest.approx(
        results[-1].scores["composite"] - bandit.engine.task.base_scores["composite"], abs=1e-6
    )


def test_nan_loss_ends_the_episode_with_the_documented_penalty(made, monkeypatch):
    env = made[envs.PHASE_ENV_ID].unwrapped
    env.reset(options={"task_seed": 0, "episode_seed": 0})
    sft = env.engine.task.tools["sft"]
    monkeypatch.setattr(sft, "loss", lambda model, index: torch.tensor(float("nan"), requires_grad=True))
    obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert terminated and not truncated
    assert "sft loss is nan" in info["diverged"]
    assert reward == pytest.approx(-env.env_config.diverged_penalty)
    assert info["episode_return"] == -env.env_config.diverged_penalty
    assert np.isfinite(obs).all()

    bandit = made[envs.BANDIT_ENV_ID].unwrapped
    bandit.reset(options={"task_seed": 0, "episode_seed": 0})
    monkeypatch.setattr(
        bandit.engine.task.tools["sft"], "loss", lambda model, index: torch.tensor(float("nan"), requires_grad=True)
    )
    _, reward, terminated, _, info = bandit.step(np.zeros(bandit.action_space.shape, np.float32))
    assert terminated and "diverged" in info and reward == -bandit.env_config.diverged_penalty


def test_interference_reads_opposed_tools():
    """SFT writes the dropped carry, DPO punishes it: their base-weight gradients must disagree
    somewhere, and every cosine is a real number in [-1, 1]."""
    run = load_config(None, TINY_RUN)
    env = envs.PhaseControlEnv(run, EnvConfig(phases=2, train_task_seeds=[0, 1]))
    env.reset(seed=0)
    reading = env.cosines
    cos = {k: v for k, v in reading.items() if is_cosine(k)}
    assert set(cos) == {"sft|dpo", "sft|retain", "dpo|retain"}
    values = [v for vals in cos.values() for v in vals]
    assert all(-1.0 <= v <= 1.0 for v in values)
    # Before any training retain's loss is KL(base || base): its gradient is rounding noise, so
    # its cosines read exactly 0 (no direction), not noise.
    assert cos["sft|retain"] == [0.0, 0.0] and cos["dpo|retain"] == [0.0, 0.0]
    assert min(cos["sft|dpo"]) < 0.0
    # The same backward gives each tool's loss and gradient norm per group, the observation's
    # unit-free inputs (log-ratios to these starting values).
    for t in ("sft", "dpo", "retain"):
        assert len(reading[f"gnorm/{t}"]) == 2 and all(v >= 0 for v in reading[f"gnorm/{t}"])
        assert reading[f"loss/{t}"][0] > (-1e-6 if t == "retain" else 0)  # retain: KL to the base, 0 at the start
    obs, _ = env.reset(seed=0)
    labels = env.observer.labels
    assert obs[labels.index("loss/sft")] == 0.0 and obs[labels.index("gnorm/dpo")] == 0.0  # start vs itself
    # The tools' mean leaves retain's noise-level norm out, so SFT's and DPO's starting ratios say
    # how they compare instead of both saturating at the bound.
    bound = LOG_RATIO_BOUND
    sft, dpo = obs[labels.index("gnorm0/sft")], obs[labels.index("gnorm0/dpo")]
    assert abs(sft) < bound and abs(dpo) < bound and sft == pytest.approx(-dpo, abs=1e-5)
    assert obs[labels.index("gnorm0/retain")] == -bound


def test_pair_cosines_read_zero_against_a_noise_level_gradient():
    g = torch.tensor([1.0, 2.0, -1.0])
    cos = pair_cosines({"a": [g, g], "b": [-g, 1e-9 * g], "c": [2 * g, torch.tensor([0.0, 1.0, 2.0])]})
    assert cos["a|b"] == [pytest.approx(-1.0), 0.0]  # group 1: b is 1e-9 of a, below the floor
    assert cos["a|c"] == [pytest.approx(1.0), pytest.approx(0.0)]  # orthogonal: a real 0
    assert list(cos) == ["a|b", "a|c", "b|c"]


def test_spaces_encode_then_decode_round_trips():
    tools = ("sft", "dpo", "retain")
    space = PhaseControlSpace(tools, 2)
    a = np.random.default_rng(0).uniform(-1, 1, space.dim)
    phase = space.phase(a, 0.5)
    b = space.encode(phase)
    # Shares are relative: encoding normalises by the largest, the rest is exact.
    np.testing.assert_allclose(space.phase(b, 0.5).tools["sft"].train, phase.tools["sft"].train)
    np.testing.assert_allclose(space.phase(b, 0.5).tools["dpo"].output, phase.tools["dpo"].output)
    shares = [phase.tools[t].share for t in tools]
    again = [space.phase(b, 0.5).tools[t].share for t in tools]
    assert np.array(again) / max(again) == pytest.approx(np.array(shares) / max(shares))

    sched_space = ScheduleSpace(tools, 2, 4)
    default = Schedule.named("default", 2)
    decoded = sched_space.schedule(apply_residual(sched_space.encode(default), np.zeros(sched_space.dim)))
    assert [p.tools["sft"].share for p in decoded.phases] == [1.0, 1.0, 0.0, 0.0]
    assert [p.tools["dpo"].share for p in decoded.phases] == [0.0, 0.0, 1.0, 1.0]
    assert [p.tools["retain"].share for p in decoded.phases] == [0.0] * 4


def test_a_shares_only_schedule_space_keeps_the_priors_steps():
    """env.controls=share for the bandit env and the searches: a share per phase and tool, nothing
    else; the zero residual decodes to the prior itself (expert: DPO at output 0.8, retain on), and a
    tool switched on where the prior does not run it trains at multiplier 1, as in the phase env."""
    tools = ("sft", "dpo", "retain")
    expert = Schedule.named("expert", 2)
    space = ScheduleSpace(tools, 2, 4, shares_only=True, held=expert)
    assert space.dim == 12 and space.labels()[:3] == ["phase0.sft.share", "phase0.dpo.share", "phase0.retain.share"]
    prior = space.encode(expert)
    decoded = space.schedule(apply_residual(prior, np.zeros(space.dim)))
    for p, phase in enumerate(decoded.phases):
        want = expert.phase_at((p + 0.5) / 4)
        for t in tools:
            mine, theirs = phase.tools[t], want.tools.get(t)
            if theirs is None or theirs.share == 0:
                assert mine.share == 0.0
                continue
            assert (mine.train, mine.output) == (theirs.train, theirs.output)
    on = space.schedule(np.ones(space.dim))
    first = expert.phase_at(0.125)
    assert all(c.share == 1.0 for c in on.phases[0].tools.values())
    for t in tools:
        kept = first.tools.get(t)
        ones = [[1.0, 1.0], [1.0, 1.0]]
        assert on.phases[0].tools[t].output == (kept.output if kept is not None and kept.share > 0 else ones)
    np.testing.assert_allclose(space.encode(on), np.ones(space.dim))


def test_the_bandit_env_under_share_controls_acts_on_the_shares_alone(made):
    engine = made[envs.BANDIT_ENV_ID].unwrapped.engine
    bandit = envs.ScheduleBanditEnv(engine.config, EnvConfig(phases=2, train_task_seeds=[0, 1], controls="share"),
                                    engine=engine)
    assert bandit.action_space.shape == (2 * len(engine.tool_names),)
    prior = Schedule.named("default", engine.layer_map.groups)
    zero = bandit.decode(np.zeros(bandit.action_space.shape))
    assert [{t: c.share for t, c in ph.tools.items() if c.share > 0} for ph in zero.phases] == [
        {t: c.share for t, c in prior.phase_at((p + 0.5) / 2).tools.items() if c.share > 0} for p in range(2)]


def test_regroup_averages_by_relative_depth():
    s = Schedule.from_dict(
        {
            "schema_version": 1,
            "layer_groups": 4,
            "phases": [
                {"fraction": 1.0, "tools": {"sft": {"train": [0, 1, 2, 3], "output": {"attn": 1, "mlp": [2, 2, 0, 0]}}}}
            ],
        }
    )
    two = s.regroup(2).phases[0].tools["sft"]
    assert two.train == [[0.5, 2.5], [0.5, 2.5]]
    assert two.output == [[1.0, 1.0], [2.0, 0.0]]
    eight = s.regroup(8).phases[0].tools["sft"]
    assert eight.train[0] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_env_config_rejects_bad_values_with_the_fix():
    with pytest.raises(ConfigError, match=r"env.train_task_seeds: got \[5, 5\)"):
        EnvConfig(train_task_seeds=[5, 5])
    with pytest.raises(ConfigError, match="Did you mean 'expert'"):
        EnvConfig(prior="expret")
    with pytest.raises(ConfigError, match="env.phases"):
        EnvConfig(phases=0)
    grains = r"\['layer', 'tool', 'share'\]"
    with pytest.raises(ConfigError, match=rf"env.controls: got 'tools'; expected one of {grains}.*'tool'"):
        EnvConfig(controls="tools")
    with pytest.raises(ConfigError, match=r"env.train_range"):
        EnvConfig(train_range=1.0)  # [1, 1]: no learning-rate control left



def test_a_prior_the_actions_cannot_express_is_refused_before_weights_load(tmp_path):
    """The zero action must reproduce the prior; a multiplier outside [1/R, R] or an order the actions do
    not set would be silently replaced, so the config is refused with the fix."""
    strong = Schedule.named("default")
    strong.phases[1].tools["dpo"].train = [[5.0] * len(r) for r in strong.phases[1].tools["dpo"].train]
    path = tmp_path / "strong.yaml"
    strong.save(path)
    with pytest.raises(ConfigError, match=r"phase 2, tool 'dpo': train 5 .*\[0.25, 4\].*env.train_range to 5"):
        EnvConfig(prior=str(path))
    assert EnvConfig(prior=str(path), train_range=8).prior == str(path)
    with pytest.raises(ConfigError, match=r"order 'max-gap'.*interleave"):
        EnvConfig(prior="maxright")


def test_train_range_narrows_the_multiplier_and_round_trips():
    """env.train_range=R: the extreme action is R (not 4), every multiplier inside [1/R, R] encodes and decodes
    exactly in both spaces, and the prior's multipliers of 1 stay at the zero action."""
    tools = ("sft", "dpo", "retain")
    narrow = PhaseControlSpace(tools, 2, tied=True, train_range=2.0)
    phase = narrow.phase(np.array([1.0, 1.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.5, 0.0]), 0.5)
    assert phase.tools["sft"].train == [[2.0, 2.0], [2.0, 2.0]] and phase.tools["dpo"].train[0][0] == 0.5
    assert phase.tools["retain"].train[0][0] == pytest.approx(2.0**0.5)
    np.testing.assert_allclose(narrow.encode(phase), [1.0, 1.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.5, 0.0])
    default = Schedule.named("default", 2)
    assert not narrow.encode(default.phases[0])[[1, 4, 7]].any()
    sched = ScheduleSpace(tools, 2, 4, train_range=2.0)
    decoded = sched.schedule(np.ones(sched.dim))
    assert decoded.phases[0].tools["dpo"].train[0][0] == 2.0
    np.testing.assert_allclose(sched.encode(decoded), np.ones(sched.dim))


def test_tool_level_controls_tie_every_cell_and_keep_the_prior():
    """env.controls=tool: three numbers per tool, each grid filled with one value, the prior (uniform
    grids) encoded exactly, and the zero action runs the same episode as under layer-level controls."""
    tools = ("sft", "dpo", "retain")
    tied = PhaseControlSpace(tools, 2, tied=True)
    assert tied.dim == 9 and tied.labels()[:3] == ["sft.share", "sft.train", "sft.output"]
    phase = tied.phase(np.array([1.0, 0.5, -0.25, 0.0, -1.0, 1.0, -1.0, 0.0, 0.0]), 0.5)
    assert phase.tools["sft"].train == [[2.0, 2.0], [2.0, 2.0]]
    assert phase.tools["dpo"].output == [[2.0, 2.0], [2.0, 2.0]] and phase.tools["retain"].share == 0.0
    for prior in ("default", "expert"):
        for ph in Schedule.named(prior, 2).phases:
            again = tied.phase(tied.encode(ph), ph.fraction)
            for t, c in ph.tools.items():
                np.testing.assert_allclose(again.tools[t].train, c.train)
                np.testing.assert_allclose(again.tools[t].output, c.output)

    run = load_config(None, TINY_RUN)
    scores = {}
    for controls, dim in (("layer", 27), ("tool", 9), ("share", 3)):
        env = gym.make(envs.PHASE_ENV_ID, run=run, env=EnvConfig(phases=2, train_task_seeds=[0, 1], controls=controls))
        assert env.action_space.shape == (dim,)
        env.reset(options={"task_seed": 0, "episode_seed": 3})
        for _ in range(2):
            *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
        scores[controls] = info["result"]["scores"]["composite"]
    assert scores["tool"] == pytest.approx(scores["layer"], abs=1e-6)
    assert scores["share"] == pytest.approx(scores["layer"], abs=1e-6)


def test_share_controls_set_the_shares_and_hold_the_prior_strengths():
    """env.controls=share: one number per tool; learning rates and output scales are the prior
    phase's for a tool it runs and 1 for one it does not, whatever the action."""
    tools = ("sft", "dpo", "retain")
    shares = PhaseControlSpace(tools, 2, shares_only=True)
    assert shares.dim == 3 and shares.labels() == ["sft.share", "dpo.share", "retain.share"]
    held = Schedule.named("expert", 2).phases[3]  # dpo at output 0.8, retain on
    phase = shares.phase(np.array([1.0, 0.0, -1.0]), 0.25, held)
    assert [phase.tools[t].share for t in tools] == [1.0, 0.5, 0.0]
    assert phase.tools["dpo"].output == held.tools["dpo"].output == [[0.8, 0.8], [0.8, 0.8]]
    loose = shares.phase(np.array([1.0, 1.0, 1.0]), 0.25, Schedule.named("default", 2).phases[0])
    assert loose.tools["dpo"].train == loose.tools["retain"].output == [[1.0, 1.0], [1.0, 1.0]]
    np.testing.assert_allclose(shares.encode(held), [1.0, 1.0, 1.0])  # each at the top share of the phase


def test_a_diverged_evaluation_job_is_a_named_row_scored_at_the_penalty(made, monkeypatch):
    """An evaluation run that goes NaN names the method, the task and the fix: raised in process, and
    sent back from a worker as its row (an exception would kill a subprocess worker mute, and abort
    every other method's evaluation). Tables count it at the env's penalty and say how many."""
    from metactl.envs.jobs import Job
    from metactl.errors import DivergedRun
    from metactl.evaluation import Evaluation, format_table

    env = made[envs.PHASE_ENV_ID].unwrapped
    env.engine.load_task(0)
    nan = lambda model, index: torch.tensor(float("nan"), requires_grad=True)
    monkeypatch.setattr(env.engine.task.tools["sft"], "loss", nan)
    job = Job(0, 3, schedule=Schedule.named("default", 2), label="default")
    with pytest.raises(DivergedRun, match=r"default on task 0 \(episode seed 3\) diverged: .*Lower the tools"):
        env.run_job(job)
    (result,) = env.run_jobs({0: [job]})
    assert "default on task 0" in result["diverged"]
    assert result["scores"] is None
    assert (result["label"], result["task_seed"], result["episode_seed"]) == ("default", 0, 3)
    penalty = env.env_config.diverged_penalty
    assert result["penalty"] == penalty and result["base"] == env.engine.task.base_scores

    base = result["base"]
    scores = {**base, "composite": base["composite"] + 0.5}
    finished = {"label": "default", "task_seed": 1, "base": base, "scores": scores}
    ev = Evaluation([result, finished])
    stats = ev.summary()["default"]
    assert stats["gain"][0] == pytest.approx((0.5 - penalty) / 2)
    assert stats["composite"][0] == pytest.approx(base["composite"] + 0.5)  # parts: the finished run only
    assert ev.diverged() == {"default": 1}
    table = format_table(ev)
    assert table[0][-1] == "diverged" and table[1][-1] == "1/2"


def test_hidden_observation_blocks_are_left_out_and_the_rest_is_unchanged():
    """env.hide drops whole blocks (an ablation of what a controller reads); every other entry keeps its
    value, and a misspelt block is refused with the fix."""
    run = load_config(None, TINY_RUN)
    full = envs.PhaseControlEnv(run, EnvConfig(phases=2, train_task_seeds=[0, 1]))
    part = envs.PhaseControlEnv(run, EnvConfig(phases=2, train_task_seeds=[0, 1], hide=["gnorm0", "cos"]))
    a, _ = full.reset(seed=0)
    b, info = part.reset(seed=0)
    labels = part.observer.labels
    assert not any(x.startswith(("gnorm0/", "cos/")) for x in labels) and any(x.startswith("gnorm/") for x in labels)
    assert b.shape == part.observation_space.shape == (len(labels),) and info["observation_labels"] == labels
    index = [full.observer.labels.index(x) for x in labels]
    np.testing.assert_array_equal(b, a[index])
    assert part.observation_space.contains(b)
    with pytest.raises(ConfigError, match="Did you mean 'gnorm0'"):
        EnvConfig(hide=["gnrom0"])
