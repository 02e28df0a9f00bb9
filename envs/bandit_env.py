"""The schedule-level environment: one step runs a whole schedule (a contextual bandit)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metactl.config import RunConfig
from metactl.envs.config import EnvConfig
from metactl.envs.jobs import EngineEnvMixin, Job
from metactl.envs.observe import Observer
from metactl.envs.phase_env import _stable_row
from metactl.envs.spaces import ScheduleSpace, apply_residual
from metactl.runner import Engine, PhaseResult
from metactl.schedule import Schedule


class ScheduleBanditEnv(EngineEnvMixin, gym.Env):
    """Pick a whole schedule for a task from its context; one step, one reward.

    ## Description

    Each episode draws a task, shows its context, takes a schedule as the action, runs it with
    :class:`metactl.runner.Engine` from fresh adapters, and pays the gain it made.

    ## Action Space

    ``Box(-1, 1, (P*T + T*4G,), float32)`` decoded by :class:`metactl.envs.spaces.ScheduleSpace`: a share
    per phase per tool, then per tool a train (R**a in [1/R, R], R = ``env.train_range``) and an output (1+a in [0, 2])
    value per (module kind, layer group), held for the whole run. Under ``env.controls: share``,
    ``Box(-1, 1, (P*T,), float32)``: the shares alone, each phase's learning rates and output scales
    the prior's (the decisions of the phase env's share-only controller, made open loop). The action is a residual
    around the prior schedule (``env.prior``): the schedule decoded is that of
    ``clip(prior + 2 * action, -1, 1)``, so the zero action reproduces the prior.

    ## Observation Space

    ``Box(float32)``: the base model's scores on the task's *observe* split (behaviour accuracies
    on training-distribution probes no reported score uses, stability and CKA on its own retain
    texts, composite / max, all in [0, 1]), each behaviour named by the tool that produces it, so
    any suite with the same tools gives the same layout. ``reset``'s info carries
    ``observation_labels``, the name of every entry.

    ## Rewards

    The final composite minus the base's composite on the task (the reported scores, read once,
    after the schedule ran; phases before the last are scored on the observe split, for the log),
    or under ``env.train_reward`` the same parts reweighted (``info["episode_return"]`` stays the
    reported composite's gain). If a loss or score turns NaN the reward is ``-env.diverged_penalty``
    and ``info["diverged"]`` names the error.

    ## Starting State

    A task seed drawn from ``env.train_task_seeds`` (or ``options["task_seed"]``) and an episode
    seed (adapter init and batches) drawn likewise (or ``options["episode_seed"]``).

    ## Episode End

    Always after one step, with ``terminated=True`` (the schedule ran to its end).
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self, run: RunConfig | None = None, env: EnvConfig | None = None, engine: Engine | None = None
    ) -> None:
        self.run_config = run or RunConfig()
        self.env_config = env or EnvConfig()
        self.engine = engine or Engine(self.run_config, progress=False)
        groups = self.engine.layer_map.groups
        prior = self.env_config.prior_schedule(groups)
        self.space = ScheduleSpace(
            tuple(self.engine.tool_names), groups, self.env_config.phases,
            train_range=self.env_config.train_range, shares_only=self.env_config.controls == "share", held=prior,
            merge=self.env_config.merge_tools(self.engine.tool_names),
        )
        self.observer = Observer(self.engine, self.env_config.phases, with_progress=False, hide=self.env_config.hide)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.space.dim,), dtype=np.float32)
        self.observation_space = self.observer.space
        self.prior = self.space.encode(prior) if prior else self.space.neutral()
        self._ready = False

    def decode(self, action: np.ndarray, name: str = "") -> Schedule:
        """The schedule an action stands for (a residual around the prior, as in the docstring)."""
        return self.space.schedule(apply_residual(self.prior, action), name=name)

    def act_greedily(self, job: Job) -> tuple[Schedule, dict]:
        obs, _ = self.reset(options=job.options())
        action, _ = job.actor.predict(obs, deterministic=True)
        schedule = self.decode(action, name=job.label)
        self._ready = False
        return schedule, self.engine.run(schedule, seed=job.episode_seed, score_every_phase=False)[-1].scores

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.begin_task(options)
        self._ready = True
        self.observed = dict(self.engine.task.observe_base(self.env_config.quick_probes))
        return self.observer(self.observed), {
            "task_seed": self.task_seed,
            "episode_seed": self.episode_seed,
            "observed": self.observed,
            "observation_labels": list(self.observer.labels),
        }

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        self._ready = False
        schedule = self.decode(action)
        info: dict[str, Any] = {
            "task_seed": self.task_seed,
            "episode_seed": self.episode_seed,
            "schedule": schedule.to_dict(),
            "episode_end": True,
        }
        results: list[PhaseResult] = []
        obs = self.observer(self.observed)
        try:
            self.engine.run(
                schedule, seed=self.episode_seed, on_phase=results.append, observe_probes=self.env_config.quick_probes
            )
            final = results[-1].scores
            if not np.isfinite(final["composite"]):
                raise FloatingPointError(f"composite score is {final['composite']}")
        except FloatingPointError as exc:  # DivergedError included
            info.update(
                diverged=str(exc),
                results=[_stable_row(r) for r in results],
                episode_return=-float(self.env_config.diverged_penalty),
            )
            return obs, -float(self.env_config.diverged_penalty), True, False, info
        base_scores = self.engine.task.base_scores
        base = base_scores["composite"]
        reward = float(self.env_config.return_gain(self.run_config.reward, final, base_scores))
        info.update(results=[_stable_row(r) for r in results], episode_return=float(final["composite"] - base),
                    base_composite=base)
        return obs, reward, True, False, info
