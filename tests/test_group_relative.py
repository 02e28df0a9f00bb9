"""ppo.group_size: episodes grouped on one task and episode seed, advantages leave-one-out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.policies.group_relative import leave_one_out_advantages


def test_leave_one_out_sets_each_whole_episode_to_its_return_minus_the_others_mean():
    # 4 envs x 4 steps, episodes of 2 steps. Envs 0-2 share key "a" in their first episode; env 3 is
    # alone with "b"; the second episodes of envs 0 and 1 share "c"; env 2's second is cut (no done).
    rewards = np.array([[1.0, 0.0, 2.0, 5.0], [1.0, 1.0, 2.0, 5.0], [0.5, -1.0, 3.0, 0.0], [0.5, 0.0, 3.0, 0.0]])
    starts = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=float)
    dones = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=bool)
    keys = [["a", "a", "a", "b"], ["a", "a", "a", "b"], ["c", "c", "d", "e"], ["c", "c", "d", "e"]]
    adv = np.full_like(rewards, 99.0)
    changed = leave_one_out_advantages(adv, rewards, starts, dones, keys)
    assert changed == 5
    # Returns in group "a": 2, 1, 4 -> each minus the mean of the other two.
    np.testing.assert_allclose(adv[:2, 0], 2 - 2.5)
    np.testing.assert_allclose(adv[:2, 1], 1 - 3.0)
    np.testing.assert_allclose(adv[:2, 2], 4 - 1.5)
    # Group "c": returns 1 and -1.
    np.testing.assert_allclose(adv[2:, 0], 2.0)
    np.testing.assert_allclose(adv[2:, 1], -2.0)
    # Alone with its key, or cut by the rollout's edge: PPO's advantage stays.
    assert (adv[:, 3] == 99.0).all() and (adv[2:, 2] == 99.0).all()


def test_an_episode_cut_at_the_rollout_start_is_not_grouped():
    rewards = np.ones((3, 2))
    starts = np.array([[0, 1], [1, 0], [0, 0]], dtype=float)  # env 0's first row continues an older episode
    dones = np.array([[1, 0], [0, 0], [1, 1]], dtype=bool)
    keys = [["x", "x"], ["y", "y"], ["y", "y"]]
    adv = np.zeros((3, 2))
    # env 0: rows 1-2 are one whole episode with key "y"; env 1: rows 0-2 whole, key "x". No shared key.
    assert leave_one_out_advantages(adv, rewards, starts, dones, keys) == 0


TINY = [
    "n_envs=2", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,16]",
    "eval_task_seeds=[1000]", "compare=[default]", "ppo.episodes_per_update=2", "ppo.group_size=2",
    "ppo.antithetic=false",
    "run.training.score_probes=16", "eval_suites=[]", "ppo.search_episodes=0",
]


# batched: the default's vec env, wrapped in VecMonitor (the seeds must reach the env it wraps).
@pytest.mark.parametrize(("policy", "vec_env"), [("ppo", "batched"), ("bandit", "dummy")])
def test_grouped_episodes_share_task_and_seed_and_differ_in_actions(tmp_path, policy, vec_env):
    out = tmp_path / "run"
    args = [x for o in [*TINY, f"vec_env={vec_env}", "batched_processes=1"] for x in ("--set", o)]
    res = CliRunner().invoke(
        app, ["train-controller", "--policy", policy, "--episodes", "4", "--out", str(out), "--quiet", *args]
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    first = {r["episode"]: r for r in rows if r["phase"] == 0}
    assert sorted(first) == [0, 1, 2, 3]
    rounds = [(first[2 * k], first[2 * k + 1]) for k in range(2)]
    for a, b in rounds:  # the two envs of a round are one group
        assert (a["task_seed"], a["episode_seed"]) == (b["task_seed"], b["episode_seed"])
        assert a["controls"] != b["controls"]
    assert rounds[0][0]["episode_seed"] != rounds[1][0]["episode_seed"]  # each round draws anew


def test_group_size_must_divide_the_envs():
    with pytest.raises(ConfigError, match=r"ppo.group_size: 3 does not divide the 2 envs"):
        load_controller_config(None, ["n_envs=2", "vec_env=dummy", "ppo.group_size=3"])
    with pytest.raises(ConfigError, match=r"ppo.group_size: got -1"):
        load_controller_config(None, ["ppo.group_size=-1"])
    # Searches run no PPO: any n_envs goes.
    load_controller_config(None, ["policy=random", "n_envs=3", "vec_env=dummy", "ppo.group_size=2"])


@pytest.mark.parametrize(
    ("n_envs", "vec_env", "size"), [(0, "auto", 2), (8, "batched", 2), (1, "dummy", 1), (3, "dummy", 1)]
)
def test_group_size_0_pairs_the_envs_when_they_are_even(n_envs, vec_env, size):
    overrides = [f"n_envs={n_envs}", f"vec_env={vec_env}", "ppo.group_size=0", "ppo.antithetic=false"]
    cfg = load_controller_config(None, overrides)
    assert cfg.resolved_group_size() == size
