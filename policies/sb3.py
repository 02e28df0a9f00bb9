"""Learned controllers: SB3 PPO on the phase-level env, and PPO as a contextual bandit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnvWrapper

from metactl.envs import BANDIT_ENV_ID, PHASE_ENV_ID
from metactl.policies.base import EpisodeSink, Policy
from metactl.rundir import CONTROLLER

CONTROLLER_FILE = CONTROLLER  # the SB3 zip in a run dir (and in each checkpoint)


class BudgetEndIsFinal(VecEnvWrapper):
    """The step budget is the whole task: there is no "after" for a value to bootstrap from.

    The envs end at the budget with ``truncated=True`` (the gymnasium contract for a time
    limit), and SB3 then adds ``gamma * V(final obs)`` to the last reward as if the episode
    could go on. Here it cannot: the final composite is the outcome. Clearing the flag makes
    PPO treat the budget end as the end, so the return stays final minus base. An episode cut
    short because its worker died (``info["worker_restarted"]``) is a real truncation and keeps
    the flag: its value is bootstrapped from the last observation, as for any time limit.
    """

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if not info.get("worker_restarted"):
                info["TimeLimit.truncated"] = False
        return obs, rewards, dones, infos


class _Sink(BaseCallback):
    def __init__(self, sink: EpisodeSink) -> None:
        super().__init__()
        self.sink = sink

    def _on_step(self) -> bool:
        for i, info in enumerate(self.locals["infos"]):
            self.sink(i, info)
        return True


class PPOPolicy(Policy):
    """SB3 PPO on the phase-level env: decides each phase from what the previous ones did."""

    name = "ppo"
    env_id = PHASE_ENV_ID
    uses_ppo = True
    help = "SB3 PPO on the phase-level env (closed loop: each phase sees scores, norms, interference)"

    def steps_per_episode(self) -> int:
        return self.config.env.phases

    @property
    def episodes_per_update(self) -> int:
        # PPO's rollout: ppo.episodes_per_update, rounded down to whole rounds of the envs.
        n, per = self.config.n_envs, self.config.ppo.episodes_per_update
        return max(n, per - per % n)

    def setup(self, venv, tb_dir: Path | None) -> None:
        c = self.config.ppo
        n_steps = self.steps_per_episode() * self.episodes_per_update // venv.num_envs
        self.model = PPO(
            "MlpPolicy",
            BudgetEndIsFinal(venv),
            learning_rate=c.learning_rate,
            n_steps=n_steps,
            batch_size=min(c.batch_size, n_steps * venv.num_envs),
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            clip_range=c.clip_range,
            ent_coef=c.ent_coef,
            policy_kwargs={
                "log_std_init": c.log_std_init,
                "net_arch": {"pi": list(c.net_arch), "vf": list(c.net_arch)},
            },
            seed=self.config.seed,
            device="cpu",
            verbose=0,
        )
        self._tb_dir = tb_dir
        self._set_logger()

    def _set_logger(self) -> None:
        if self._tb_dir is not None:
            self.close()  # a reload replaces the logger: close the old one's writer thread first
            self.model.set_logger(configure(str(self._tb_dir / self.name), ["tensorboard"]))

    def close(self) -> None:
        # SB3 never closes a logger it was given; its TensorBoard writer thread would outlive the
        # run (and make every later fork of this process, a sweep trial's or a launcher's, unsafe).
        model = getattr(self, "model", None)
        if model is not None and getattr(model, "_logger", None) is not None:
            model.logger.close()

    def learn(self, venv, sink: EpisodeSink) -> None:
        # One call = one rollout of episodes_per_update episodes and one PPO update.
        self.model.learn(
            total_timesteps=self.model.n_steps * venv.num_envs,
            reset_num_timesteps=False,
            callback=_Sink(sink),
            log_interval=1,
        )

    def actor(self) -> Any:
        return self.model.policy

    def save(self, path: Path) -> None:
        self.model.save(Path(path) / CONTROLLER_FILE)

    def load(self, path: Path, venv=None) -> None:
        self.model = PPO.load(
            Path(path) / CONTROLLER_FILE, env=BudgetEndIsFinal(venv) if venv is not None else None, device="cpu"
        )
        self._set_logger()


class BanditPolicy(PPOPolicy):
    """PPO on one-step episodes: a contextual policy-gradient bandit over whole schedules.

    With one step per episode PPO's advantage is reward minus a learned baseline of the task
    context, which is exactly a REINFORCE bandit with a critic; PPO's clipping keeps the
    few-sample updates from jumping.
    """

    name = "bandit"
    env_id = BANDIT_ENV_ID
    help = "SB3 PPO on the schedule-level env (a contextual bandit: one schedule per task)"

    def steps_per_episode(self) -> int:
        return 1
