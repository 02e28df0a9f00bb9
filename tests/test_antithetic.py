"""ppo.antithetic: the two episodes of a pair explore with mirrored noise."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.policies.antithetic import MirroredNoisePolicy
from metactl.policies.config import load_controller_config
from metactl.rundir import SCORES, read_jsonl


def _policy() -> MirroredNoisePolicy:
    obs, act = gym.spaces.Box(-1, 1, (5,), np.float32), gym.spaces.Box(-1, 1, (3,), np.float32)
    return MirroredNoisePolicy(obs, act, lambda _: 1e-3, log_std_init=-1.0)


def test_pairs_draw_mirrored_noise_from_their_own_gaussians():
    th.manual_seed(0)
    policy = _policy()
    obs = th.randn(4, 5)
    with th.no_grad():
        actions, values, log_prob = policy(obs)
        dist = policy.get_distribution(obs).distribution
    eps = actions - dist.mean
    th.testing.assert_close(eps[1], -eps[0])
    th.testing.assert_close(eps[3], -eps[2])
    assert not th.allclose(eps[0], eps[2])  # each pair draws anew
    th.testing.assert_close(log_prob, dist.log_prob(actions).sum(-1))  # the actions' own Gaussian densities
    assert values.shape == (4, 1)
    with th.no_grad():
        greedy, _, _ = policy(obs, deterministic=True)
    th.testing.assert_close(greedy, dist.mean)


def test_an_odd_batch_samples_plainly():
    th.manual_seed(0)
    with th.no_grad():
        actions, _, _ = _policy()(th.zeros(3, 5))
    eps = actions - actions.mean(0)
    assert not th.allclose(eps[1], -eps[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ppo.antithetic=true"], r"needs ppo.group_size=2 \(got 1"),
        (["ppo.antithetic=true", "ppo.group_size=2", "ppo.use_sde=true"], "gSDE"),
        (["ppo.antithetic=maybe"], "expected true or false"),
    ],
)
def test_antithetic_refuses_what_it_cannot_mirror(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_controller_config(None, ["n_envs=2", "vec_env=dummy", *overrides])


def test_a_mirrored_run_trains_and_reloads_with_its_policy_class(tmp_path):
    from metactl.policies import POLICIES
    from metactl.policies.sb3 import load_ppo

    out = tmp_path / "run"
    sets = [
        "n_envs=2", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,16]",
        "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2", "ppo.group_size=2",
        "ppo.antithetic=true", "run.training.score_probes=16", "eval_suites=[]", "vec_env=batched",
        "batched_processes=1",
    ]
    args = [x for s in sets for x in ("--set", s)]
    res = CliRunner().invoke(app, ["train-controller", "--episodes", "4", "--out", str(out), "--quiet", *args])
    assert res.exit_code == 0, res.output
    cfg = load_controller_config(out / "config.yaml")
    policy = POLICIES["ppo"](cfg)
    assert policy._policy_class() is MirroredNoisePolicy
    model = load_ppo(out / "controller.zip", *_spaces(out), policy_class=policy._policy_class())
    assert isinstance(model.policy, MirroredNoisePolicy)


def _spaces(out) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    import json
    import zipfile

    data = json.loads(zipfile.ZipFile(out / "controller.zip").read("data"))
    shapes = [tuple(data[k]["_shape"]) for k in ("observation_space", "action_space")]
    return gym.spaces.Box(-np.inf, np.inf, shapes[0], np.float32), gym.spaces.Box(-1, 1, shapes[1], np.float32)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["n_envs=3"], r"does not divide the 3 envs.*and ppo.antithetic=false"),
        (["ppo.group_size=1"], r"needs ppo.group_size=2 \(got 1, resolved 1\); set .* or ppo.antithetic=false"),
    ],
)
def test_the_default_file_mirrors_pairs_and_says_how_to_turn_it_off(overrides, message):
    """configs/train/default.yaml runs mirrored pairs, so a user who asks for an odd number of envs, or
    no groups, is told both settings to change, not one at a time."""
    from metactl.paths import CONFIGS

    path = CONFIGS / "train" / "default.yaml"
    cfg = load_controller_config(path, ["vec_env=dummy"])
    assert cfg.ppo.antithetic and cfg.resolved_group_size() == 2
    with pytest.raises(ConfigError, match=message):
        load_controller_config(path, ["vec_env=dummy", *overrides])


def test_the_bandit_runs_mirrored_pairs_under_the_default_file(tmp_path):
    """policy bandit shares the PPO settings, so under configs/train/default.yaml it runs mirrored pairs
    too: the two episodes of each pair run one task and episode seed, and its zip reloads with the
    mirrored class."""
    from metactl.policies import POLICIES
    from metactl.policies.sb3 import load_ppo

    out = tmp_path / "run"
    sets = [
        "policy=bandit", "n_envs=2", "vec_env=dummy", "run.training.total_steps=4", "env.phases=2",
        "env.train_task_seeds=[0,16]", "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2",
        "run.training.score_probes=16", "eval_suites=[]",
    ]
    args = [x for s in sets for x in ("--set", s)]
    res = CliRunner().invoke(app, ["train-controller", "--episodes", "4", "--out", str(out), "--quiet", *args])
    assert res.exit_code == 0, res.output
    cfg = load_controller_config(out / "config.yaml")
    assert cfg.ppo.antithetic and cfg.resolved_group_size() == 2
    seeds = {}
    for row in read_jsonl(out / SCORES):
        seeds.setdefault(row["episode"], (row["task_seed"], row["episode_seed"]))
    assert sorted(seeds) == [0, 1, 2, 3]
    assert seeds[0] == seeds[1] and seeds[2] == seeds[3]
    policy = POLICIES["bandit"](cfg)
    assert policy._policy_class() is MirroredNoisePolicy
    assert isinstance(load_ppo(out / "controller.zip", *_spaces(out), policy_class=MirroredNoisePolicy).policy,
                      MirroredNoisePolicy)
