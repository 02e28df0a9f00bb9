"""ppo.obs_noise: noisy readings while the controller trains, clean ones when it acts greedily."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.policies.obs_noise import NoisyReadings

LABELS = ["obs/sft", "phase=0", "phase=1", "budget_left", "cos/sft-dpo/0"]


class _Readings(gym.Env):
    """Observations drawn from the env's own generator: envs seeded alike read alike."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (len(LABELS),), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-0.5, 0.5, len(LABELS)).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 0.0, False, False, {}


def _venv(n: int = 4) -> DummyVecEnv:
    venv = DummyVecEnv([_Readings for _ in range(n)])
    venv.seed(0)
    venv._seeds = [0, 0, 1, 1]  # pairs read alike, as ppo.group_size=2 seeds them
    return venv


def _roll(scale: float, seed: int, steps: int = 6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    clean, noisy = _venv(), NoisyReadings(_venv(), scale, LABELS, seed, group_size=2)
    got, want = [noisy.reset()], [clean.reset()]
    for _ in range(steps):
        action = np.zeros((4, 1), np.float32)
        got.append(noisy.step(action)[0])
        want.append(clean.step(action)[0])
    return got, want


def test_readings_are_perturbed_the_clock_is_not_and_pairs_share_the_draw():
    got, want = _roll(1.0, seed=0)
    space = _Readings.observation_space
    for g, w in zip(got, want):
        assert np.all(g >= space.low) and np.all(g <= space.high)
        np.testing.assert_array_equal(g[:, 1:4], w[:, 1:4])  # phase one-hot and budget left exact
        np.testing.assert_array_equal(g[0], g[1])  # a pair reads alike and is perturbed alike
        np.testing.assert_array_equal(g[2], g[3])
    noise = np.stack(got[1:]) - np.stack(want[1:])
    assert np.abs(noise[..., [0, 4]]).mean() > 0.05  # about the readings' own spread (std 0.29)
    assert not np.allclose(noise[:, 0], noise[:, 2])  # the two pairs draw apart


def test_the_noise_is_deterministic_under_its_seed():
    a, _ = _roll(0.5, seed=3)
    b, _ = _roll(0.5, seed=3)
    c, _ = _roll(0.5, seed=4)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))


@pytest.mark.parametrize("value", [-0.1, 11.0, "loud"])
def test_obs_noise_refuses_values_out_of_range(value):
    with pytest.raises(ConfigError, match="ppo.obs_noise"):
        load_controller_config(None, ["vec_env=dummy", f"ppo.obs_noise={value}"])


def test_a_noisy_run_trains_on_the_same_episodes_and_acts_otherwise(tmp_path, tiny_ppo_run):
    """Same seed, same tasks and episode seeds; the noisy readings move the sampled schedules (the
    policy's mean reads them), so the training controls differ from the clean run's."""
    clean = tiny_ppo_run(tmp_path / "clean", 4, "ppo.obs_noise=0.0")
    noisy = tiny_ppo_run(tmp_path / "noisy", 4, "ppo.obs_noise=1.0")
    keys = [(r["task_seed"], r["episode_seed"]) for r in clean]
    assert keys == [(r["task_seed"], r["episode_seed"]) for r in noisy]
    shares = [[[r["controls"][t]["share"] for t in sorted(r["controls"])] for r in run] for run in (clean, noisy)]
    assert shares[0] != shares[1]
    assert load_controller_config(tmp_path / "noisy" / "config.yaml").ppo.obs_noise == 1.0
