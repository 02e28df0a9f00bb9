"""ppo.smooth: a penalty on how far the policy's mean action moves when its readings are perturbed."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.policies.smooth import SmoothReactions

LABELS = ["obs/sft", "phase=0", "phase=1", "budget_left", "cos/sft-dpo/0"]
CLOCK = [1, 2, 3]


class _Readings(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (len(LABELS),), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-0.5, 0.5, len(LABELS)).astype(np.float32), {}

    def step(self, action):
        return self.reset()[0], 0.0, False, False, {}


def _policy(seed: int = 0):
    model = PPO("MlpPolicy", DummyVecEnv([_Readings]), seed=seed, device="cpu",
                policy_kwargs={"log_std_init": -1.5})
    return model.policy


def _batch(n: int = 64, seed: int = 0) -> th.Tensor:
    return th.as_tensor(np.random.default_rng(seed).uniform(-0.5, 0.5, (n, len(LABELS))), dtype=th.float32)


def test_the_clock_is_never_perturbed():
    policy = _policy()
    smooth = SmoothReactions(policy, 1.0, 0.5, LABELS)
    obs = _batch()
    obs[:, [0, 4]] = 0.1  # the readings alike across the batch; only the clock varies
    assert smooth.penalty(obs).item() == 0.0
    assert smooth.penalty(_batch()).item() > 0.0


def test_the_penalty_moves_the_mean_not_the_exploration_std():
    th.manual_seed(0)
    policy = _policy()
    smooth = SmoothReactions(policy, 10.0, 1.0, LABELS)
    obs = _batch(seed=1)
    before = smooth.penalty(obs).item()
    log_std = policy.log_std.detach().clone()
    for _ in range(50):  # the penalty's gradient alone, through the hook, as PPO's steps apply it
        policy.optimizer.zero_grad()
        policy.evaluate_actions(obs, th.zeros(len(obs), 2))
        policy.optimizer.step()
    th.testing.assert_close(policy.log_std.detach(), log_std)  # widening sigma must not pay for it
    assert smooth.penalty(obs).item() < 0.5 * before
    smooth.remove()
    policy.optimizer.zero_grad()
    policy.evaluate_actions(obs, th.zeros(len(obs), 2))
    policy.optimizer.step()  # no hook: nothing to step on
    assert "evaluate_actions" not in policy.__dict__


@pytest.mark.parametrize("field,value", [("smooth", -1.0), ("smooth", "strong"), ("smooth_noise", 0.0),
                                         ("smooth_noise", 11.0)])
def test_smooth_refuses_values_out_of_range(field, value):
    with pytest.raises(ConfigError, match=f"ppo.{field}"):
        load_controller_config(None, ["vec_env=dummy", f"ppo.{field}={value}"])


def test_a_smoothed_run_trains_on_the_same_episodes_and_updates_otherwise(tmp_path, tiny_ppo_run):
    """The same first rollout (the penalty acts on updates only), then other sampled schedules; the
    run's controller loads back as a plain SB3 zip and is deterministic under its seed."""
    def _train(out, weight: float) -> list[dict]:
        return tiny_ppo_run(out, 6, f"ppo.smooth={weight}", "ppo.smooth_noise=2.0")

    plain, smooth = _train(tmp_path / "plain", 0.0), _train(tmp_path / "smooth", 100.0)
    keys = [(r["task_seed"], r["episode_seed"]) for r in plain]
    assert keys == [(r["task_seed"], r["episode_seed"]) for r in smooth]
    shares = [[[r["controls"][t]["share"] for t in sorted(r["controls"])] for r in run] for run in (plain, smooth)]
    assert shares[0][:2] == shares[1][:2]
    assert shares[0][2:] != shares[1][2:]
    again = _train(tmp_path / "again", 100.0)
    assert [r["controls"] for r in again] == [r["controls"] for r in smooth]
    assert load_controller_config(tmp_path / "smooth" / "config.yaml").ppo.smooth == 100.0
