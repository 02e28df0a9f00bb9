"""Noisy readings while the controller trains (``ppo.obs_noise``).

The closed-loop policy reacts to what it reads: scores, norms, interference. Reactions learned on
the training families can cost on a family whose readings differ (docs/controller.md: on
``style-clash`` the policy's own time-averaged schedule beats its closed loop by about 0.25, because it
gives SFT less of the late steps there than on the training tasks). Gaussian noise on the readings
while it trains is the plain regulariser for that (domain randomisation of the observation): a
reaction survives only if it pays at the noise's scale, so the policy's mean moves less with small
differences in what it reads.

The noise on each entry is ``obs_noise`` times that entry's running standard deviation over every
observation of the run so far (unit-free: a score in [0, 1] and a log-ratio in [-5, 5] are perturbed
alike relative to how much each varies), clipped back into the observation space. The phase index
and the budget left are exact: they are the clock, not a reading. Both envs of a mirrored pair (or
any group of ``ppo.group_size``) get the same draw, so the pair still differs only in its exploration
noise. Acting greedily (evaluation, ``averaged``, transfer) reads clean observations; the rollout
buffer holds the noisy ones, so PPO's ratios are taken on what the policy acted on.

A resumed run starts its running statistics and noise generator afresh (they are not checkpointed):
deterministic from the start, not across an interruption.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from metactl.envs.observe import block_of

CLOCK = ("phase", "budget_left")  # observation blocks (env.hide's names) that are the clock, never perturbed


class NoisyReadings(VecEnvWrapper):
    """Add ``scale`` x running std of Gaussian noise to every observation entry but the clock's."""

    def __init__(self, venv: VecEnv, scale: float, labels: list[str], seed: int, group_size: int = 1) -> None:
        super().__init__(venv)
        if len(labels) != venv.observation_space.shape[0]:
            raise ValueError(f"{len(labels)} observation labels for a space of shape {venv.observation_space.shape}")
        self.scale = scale
        self.group_size = max(1, group_size)
        self.perturbed = np.array([block_of(label) not in CLOCK for label in labels])
        self.stats = RunningMeanStd(shape=venv.observation_space.shape)
        self.rng = np.random.default_rng([seed, 0x0B5])
        self.low, self.high = venv.observation_space.low, venv.observation_space.high

    def _noisy(self, obs: np.ndarray) -> np.ndarray:
        self.stats.update(obs)
        n = obs.shape[0]
        heads = -(-n // self.group_size)
        draw = np.repeat(self.rng.standard_normal((heads, obs.shape[1])), self.group_size, axis=0)[:n]
        noise = self.scale * np.sqrt(self.stats.var) * draw * self.perturbed
        return np.clip(obs + noise, self.low, self.high).astype(obs.dtype)

    def reset(self) -> np.ndarray:
        return self._noisy(self.venv.reset())

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        # An env that finished returns the next episode's first observation; the terminal one (which
        # PPO bootstraps from only on a real truncation) stays clean.
        return self._noisy(obs), rewards, dones, infos
