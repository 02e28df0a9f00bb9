"""Learned controllers: SB3 PPO on the phase-level env, and PPO as a contextual bandit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnvWrapper

from metactl.envs import BANDIT_ENV_ID, PHASE_ENV_ID
from metactl.policies.antithetic import MirroredNoisePolicy
from metactl.policies.base import EpisodeSink, Policy
from metactl.policies.curriculum import TaskCurriculum, level_of
from metactl.policies.group_relative import GroupRelativeAdvantage
from metactl.policies.obs_noise import NoisyReadings
from metactl.policies.smooth import SmoothReactions
from metactl.policies.weight_average import WEIGHT_AVERAGE_FILE, WeightAverage, averaged_updates
from metactl.rundir import CONTROLLER

CONTROLLER_FILE = CONTROLLER  # the SB3 zip in a run dir (and in each checkpoint)


# What SB3 pickles into a model zip (cloudpickle, which runs code on load) and what metactl hands
# it instead, so loading a controller.zip unpickles nothing. Unknown pickled entries are refused.
_REBUILT = ("policy_class", "observation_space", "action_space", "rollout_buffer_class", "clip_range", "lr_schedule")
_DROPPED = ("_last_obs", "_last_original_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer")


def load_ppo(path: Path, observation_space: Any, action_space: Any, env: Any = None, learning_rate: float = 1e-3,
             clip_range: float = 0.2, policy_class: type | None = None) -> PPO:
    """``PPO.load`` that executes nothing from the file: every pickled entry of its ``data`` is
    replaced (``custom_objects``) by an object built here, the spaces are the env's own, and the
    tensors load with ``torch.load(weights_only=True)`` (SB3's own rule)."""
    import json
    import zipfile

    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.utils import ConstantSchedule

    from metactl.errors import ConfigError

    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("data"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not an SB3 model zip ({type(exc).__name__}: {exc}).") from exc
    for key, space in (("observation_space", observation_space), ("action_space", action_space)):
        shape = (data.get(key) or {}).get("_shape")  # SB3 keeps the shape readable beside the pickle
        if shape is not None and tuple(shape) != tuple(space.shape):
            raise ConfigError(
                f"{path}: the controller's {key.replace('_', ' ')} has shape {tuple(shape)}, the env's "
                f"{tuple(space.shape)}; it was trained on another layout (use --mode schedule, or retrain)."
            )
    pickled = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    unknown = [k for k in pickled if k not in _REBUILT + _DROPPED]
    if unknown:
        raise ConfigError(
            f"{path}: holds pickled entries {unknown} that metactl does not rebuild; it loads no pickle from a run "
            "dir (a pickle can run code), so this controller is refused."
        )
    custom = {
        "policy_class": policy_class or ActorCriticPolicy,
        "observation_space": observation_space,
        "action_space": action_space,
        "rollout_buffer_class": RolloutBuffer,
        "clip_range": ConstantSchedule(clip_range),
        "lr_schedule": ConstantSchedule(learning_rate),
        **dict.fromkeys(_DROPPED),
    }
    return PPO.load(path, env=env, device="cpu", custom_objects=custom)


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
    help = "SB3 PPO on the phase-level env (closed loop: each phase sees observe-split scores, norms, interference)"
    _average: WeightAverage | None = None  # ppo.weight_average's running mean, from setup() on
    _curriculum: TaskCurriculum | None = None  # ppo.curriculum's level scores, from setup() on

    def steps_per_episode(self) -> int:
        return self.config.env.phases

    @property
    def episodes_per_update(self) -> int:
        # PPO's rollout: ppo.episodes_per_update, rounded down to whole rounds of the envs.
        n, per = self.config.resolved_n_envs(), self.config.ppo.episodes_per_update
        return max(n, per - per % n)

    def setup(self, venv, tb_dir: Path | None) -> None:
        c = self.config.ppo
        n_steps = self.steps_per_episode() * self.episodes_per_update // venv.num_envs
        self.model = PPO(
            self._policy_class(),
            self._wrap(venv),
            learning_rate=c.learning_rate,
            n_steps=n_steps,
            batch_size=min(c.batch_size, n_steps * venv.num_envs),
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            clip_range=c.clip_range,
            ent_coef=c.ent_coef,
            use_sde=c.use_sde,
            policy_kwargs={
                "log_std_init": c.log_std_init,
                "net_arch": {"pi": list(c.net_arch), "vf": list(c.net_arch)},
            },
            seed=self.config.seed,
            device="cpu",
            verbose=0,
        )
        if c.share_log_std_init is not None:
            self._set_share_std(venv, c.share_log_std_init)
        size = self.config.resolved_group_size()
        if size > 1:
            self._seed_in_groups(venv, size)
        self._tb_dir = tb_dir
        self._average = WeightAverage() if c.weight_average > 0 else None
        self._curriculum = None
        if c.curriculum != "none":
            self._curriculum = TaskCurriculum(
                tuple(self.config.env.train_task_seeds), level_of(self.config.run.suite, c.curriculum),
                c.curriculum_temperature, c.curriculum_uniform,
            )
        self._set_logger()

    def _wrap(self, venv) -> VecEnvWrapper:
        if self.config.ppo.obs_noise > 0:
            labels = venv.get_attr("observation_labels", indices=[0])[0]
            venv = NoisyReadings(venv, self.config.ppo.obs_noise, labels, self.config.seed,
                                 self.config.resolved_group_size())
        return BudgetEndIsFinal(venv)

    def _smooth(self, venv) -> SmoothReactions | None:
        # Hooks on the policy and its optimizer, held only while PPO updates: the policy is pickled
        # for evaluation workers and saved as a plain SB3 zip, neither of which may carry them.
        c = self.config.ppo
        if c.smooth == 0:
            return None
        labels = venv.get_attr("observation_labels", indices=[0])[0]
        model = self.model
        return SmoothReactions(model.policy, c.smooth, c.smooth_noise, labels,
                               record=lambda key, value: model.logger.record_mean(key, value))

    def _policy_class(self) -> type:
        # Both sample as a Gaussian around the same MLP mean; the mirrored one pairs the noise of
        # consecutive envs (ppo.antithetic). The state dict is the same, so either loads either's zip.
        return MirroredNoisePolicy if self.config.ppo.antithetic else ActorCriticPolicy

    def _set_share_std(self, venv, log_std: float) -> None:
        # The share actions decide the schedule's structure (which tools run in a phase); the train and
        # output actions its strength, where wide exploration wrecks models. One log std for both forces
        # a choice between exploring structure and keeping rollouts sane; this separates them.
        space = venv.get_attr("controls" if self.env_id == PHASE_ENV_ID else "space", indices=[0])[0]
        shares = [i for i, label in enumerate(space.labels()) if label.endswith(".share")]
        with torch.no_grad():
            # Actions are log_std's last axis: the vector itself, or gSDE's (hidden, action) matrix's columns.
            self.model.policy.log_std[..., shares] = log_std

    def _seed_in_groups(self, venv, size: int) -> None:
        # Envs seeded alike draw the same task and episode seed at every reset (the draws are their
        # only use of np_random), so each group of `size` runs one task with independent actions.
        seeds = venv.seed(self.config.seed)
        while isinstance(venv, VecEnvWrapper):  # VecMonitor: the seeds live on the env it wraps
            venv = venv.venv
        venv._seeds = [seeds[i - i % size] for i in range(venv.num_envs)]  # read at the first reset

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
        callback = _Sink(sink)
        if self.config.resolved_group_size() > 1:
            callback = CallbackList([callback, GroupRelativeAdvantage()])
        if self._curriculum is not None:  # last: it scores the advantages PPO trains on, grouped ones included
            callback = CallbackList([callback, self._curriculum])
        smooth = self._smooth(venv)
        try:
            self.model.learn(
                total_timesteps=self.model.n_steps * venv.num_envs,
                reset_num_timesteps=False,
                callback=callback,
                log_interval=1,
            )
        finally:
            if smooth is not None:
                smooth.remove()
        if self._average is not None:
            done = self.model.num_timesteps // (self.model.n_steps * venv.num_envs)  # updates so far, resumes too
            if done > self.updates - averaged_updates(self.updates, self.config.ppo.weight_average):
                self._average.add(self.model.policy.state_dict())

    def finish(self) -> None:
        average, self._average = self._average, None
        if average is not None and average.count:
            policy = self.model.policy
            policy.load_state_dict(average.mean(policy.state_dict()))

    def actor(self) -> Any:
        return self.model.policy

    def save(self, path: Path) -> None:
        self.model.save(Path(path) / CONTROLLER_FILE)
        if self._average is not None and self._average.count:
            self._average.save(Path(path) / WEIGHT_AVERAGE_FILE)
        if self._curriculum is not None:
            self._curriculum.save(Path(path))

    def load(self, path: Path, venv=None) -> None:
        c = self.config.ppo
        self.model = load_ppo(
            Path(path) / CONTROLLER_FILE, venv.observation_space, venv.action_space,
            env=self._wrap(venv), learning_rate=c.learning_rate, clip_range=c.clip_range,
            policy_class=self._policy_class(),
        )
        saved = Path(path) / WEIGHT_AVERAGE_FILE
        if self._average is not None and saved.is_file():  # a checkpoint's running mean
            self._average = WeightAverage.load(saved)
        if self._curriculum is not None and venv is not None:  # a checkpoint: draw as the run was drawing
            self._curriculum.load(Path(path))
            if self._curriculum.scores:
                self._curriculum.apply(venv)
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
