"""The phase-level environment: one step runs one phase of tool training on a real model."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metactl.config import RunConfig
from metactl.envs.config import EnvConfig
from metactl.envs.jobs import EngineEnvMixin, Job
from metactl.envs.observe import OBSERVED_COMPOSITE, Observer
from metactl.envs.spaces import apply_residual
from metactl.runner import Engine, PhaseResult
from metactl.schedule import Phase, Schedule
from metactl.scoring import Scorer


class PhaseControlEnv(EngineEnvMixin, gym.Env):
    """Conduct SFT, DPO and retain adapters phase by phase, per layer group and module kind.

    ## Description

    An episode adapts a fresh copy of the model (``RunConfig.model``) on one task drawn from
    the suite: ``env.phases`` phases of ``training.total_steps / phases`` optimiser steps each,
    run by :class:`metactl.runner.Engine` (the same runner every schedule uses). Before each
    phase the agent sets how every tool takes part in it.

    ## Action Space

    ``Box(-1, 1, (T * (1 + 4G),), float32)`` for ``T`` tools and ``G`` layer groups; per tool, in
    order: ``share``, then ``train`` for (attn, mlp) x groups, then ``output`` likewise
    (``env.controls: tool``: ``Box(-1, 1, (3T,))``, one ``train`` and one ``output`` per tool;
    ``env.controls: share``: ``Box(-1, 1, (T,))``, the shares alone, learning rates and output
    scales held at the prior phase's), plus one component per tool of ``env.merge`` (last): fold that
    adapter into the base at the phase's end when its decoded value is above 0 (a prior's "no merge"
    is coded -0.5, so a residual above 0.25 merges). The
    action is a residual around the prior schedule's phase (``env.prior``): the controls are
    decoded from ``clip(prior + 2 * action, -1, 1)`` as in :mod:`metactl.envs.spaces`:
    share = (a+1)/2 in [0, 1] (relative share of the phase's steps; 0 sits the tool out),
    train = R**a in [1/R, R] (learning-rate multiplier, R = ``env.train_range``, 4), output = 1+a in [0, 2] (adapter
    output scale). The zero action reproduces the prior
    (``env.prior: neutral``: all tools at full force, equal shares).

    ## Observation Space

    ``Box(float32)`` laid out by :class:`metactl.envs.observe.Observer`, with only what a user
    could read while training: the current scores on the suite's *observe* split (behaviour
    accuracies on training-distribution probes that no reported score uses, stability and CKA
    on its own retain texts, their composite / max), a one-hot phase index and the fraction of
    the budget left, ``log1p`` of each tool's update norm per layer group, the gradient cosine
    between each pair of tools per layer group on the shared base weights (interference,
    :mod:`metactl.interference`), and each tool's loss and gradient norm on a fixed batch relative
    to the episode's start. Nothing names the suite or its generator's knobs: the same layout
    comes from any suite whose behaviours are produced by the same tools. ``reset``'s info carries
    ``observation_labels``, the name of every entry. No held-out or test probe is read before
    the episode's final score.

    ## Rewards

    Shaped by a potential, the observe split's composite: each phase but the last earns its
    change (the first measured from the base model). The last phase earns the reported final
    composite minus the reported base composite, less the shaping paid so far, so an episode's
    return is exactly the reported final composite minus the base's (also given as
    ``info["episode_return"]`` at the end), and the reported scores are read once, then. Under
    ``env.train_reward`` the last phase earns the same score parts reweighted instead, so the
    return is their gain while ``info["episode_return"]`` stays the reported composite's. If a
    loss or score turns NaN the episode ends (``terminated``) with ``info["diverged"]`` naming
    the error and a reward that brings the return to ``-env.diverged_penalty``: never a NaN
    reward.

    ## Starting State

    Fresh adapters (zero update) on a task whose seed is drawn from ``env.train_task_seeds``;
    ``reset(options={"task_seed": s, "episode_seed": e})`` pins either (evaluation uses task
    seeds outside the training range); ``"suite": name`` takes the task from another suite with
    the same tools (an evaluation suite, e.g. task families the controller never trained on).

    ## Episode End

    Truncated after ``env.phases`` steps (the step budget is spent); terminated only on
    divergence.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self, run: RunConfig | None = None, env: EnvConfig | None = None, engine: Engine | None = None
    ) -> None:
        self.run_config = run or RunConfig()
        self.env_config = env or EnvConfig()
        self.engine = engine or Engine(self.run_config, progress=False)
        self.controls = self.env_config.phase_controls(tuple(self.engine.tool_names), self.engine.layer_map.groups)
        self.observer = Observer(self.engine, self.env_config.phases, hide=self.env_config.hide)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.controls.dim,), dtype=np.float32)
        self.observation_space = self.observer.space
        n = self.env_config.phases
        self._phase_steps = Schedule(phases=[Phase(1.0 / n, {})] * n).phase_steps(self.run_config.training.total_steps)
        prior = self.env_config.prior_schedule(self.controls.groups)
        n = self.env_config.phases
        self.prior_phases = [prior.phase_at((p + 0.5) / n) if prior else None for p in range(n)]
        self.prior = [
            self.controls.encode(phase) if phase is not None else self.controls.neutral()
            for phase in self.prior_phases
        ]
        self._episode = None
        self._phases: list = []
        self.actions: list[list[float]] = []
        self.observations: list[list[float]] = []

    # -- gymnasium API ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.start_episode(options)
        return self.first_observation(self.engine.gradient_cosines(self.env_config.interference_rows))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        phase, steps, scorer = self.plan_step(action)
        try:
            result = self._episode.run_phase(phase, steps, score=True, scorer=scorer)
            self.check_result(result)
            cosines = None if self.in_last_phase else self.engine.gradient_cosines(self.env_config.interference_rows)
        except FloatingPointError as exc:  # DivergedError included
            return self.finish_step(phase, exc)
        return self.finish_step(phase, result, cosines)

    # -- the parts of reset and step (a batched VecEnv runs the middle of many envs at once) ------------
    @property
    def in_last_phase(self) -> bool:
        """The phase about to run (or running) is the episode's last."""
        return self.phase == self.env_config.phases - 1

    def start_episode(self, options: dict[str, Any] | None) -> None:
        """Everything of ``reset`` before the interference reading (after ``super().reset``)."""
        self.begin_task(options)
        self._episode = self.engine.episode(self.episode_seed)
        self._phases = []
        self.actions = []  # what the actor asked for, phase by phase (evaluation rows keep it)
        self.phase = 0
        # The controller reads the observe split only; the reported scores are read once, at the end.
        self.observed = dict(self.engine.task.observe_base(self.env_config.quick_probes))
        self.observed_base = self.observed
        self.potential0 = self.observed[OBSERVED_COMPOSITE]
        self.scores: dict[str, float] = {}

    def first_observation(self, cosines: dict[str, list[float]]) -> tuple[np.ndarray, dict]:
        self.cosines = self.start_reading = cosines
        obs = self._observe(0, self.engine.adapters.norms())
        self.observations = [obs.tolist()]  # what each action was decided on (a guard is taken from them)
        return obs, {
            "task_seed": self.task_seed,
            "episode_seed": self.episode_seed,
            "observed": self.observed,
            "observation_labels": list(self.observer.labels),
        }

    def plan_step(self, action: np.ndarray) -> tuple[Phase, int, Scorer | None]:
        """The phase ``action`` decodes to, its steps, and the scorer its end is read with."""
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        self.actions.append([float(x) for x in np.asarray(action, dtype=float).ravel()])
        phase = self.decode(self.phase, action)
        task = self.engine.task
        scorer = task.scorer if self.in_last_phase else task.observe_scorer(self.env_config.quick_probes)
        return phase, self._phase_steps[self.phase], scorer

    def check_result(self, result: PhaseResult) -> None:
        composite = result.scores["composite" if self.in_last_phase else OBSERVED_COMPOSITE]
        if not np.isfinite(composite):
            raise FloatingPointError(f"composite score is {composite}")

    def finish_step(
        self, phase: Phase, result: PhaseResult | FloatingPointError, cosines: dict[str, list[float]] | None = None
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        """The rest of ``step`` once the phase ran (or diverged) and, unless it was the last, the
        interference was read."""
        before = self.observed[OBSERVED_COMPOSITE]
        info: dict[str, Any] = {"task_seed": self.task_seed, "episode_seed": self.episode_seed, "phase": self.phase}
        last = self.in_last_phase
        if isinstance(result, FloatingPointError):
            self._episode = None
            info.update(
                diverged=str(result),
                controls=_controls_row(phase),
                episode_end=True,
                episode_return=-self.env_config.diverged_penalty,
            )
            reward = -(before - self.potential0) - self.env_config.diverged_penalty
            obs = self._observe(self.phase, None)
            return obs, float(reward), True, False, info
        if not last:  # nothing acts on the final observation
            self.cosines = cosines
        self._phases.append(phase)
        self.phase += 1
        info.update(
            result=_stable_row(result),
            controls=_controls_row(phase),
            interference={k: list(v) for k, v in self.cosines.items()},
        )
        if last:
            # The reported scores, read once: the return is their final composite minus the base's
            # (its parts reweighted under env.train_reward), whatever the observe readings shaped.
            self.scores = result.scores
            base_scores = self.engine.task.base_scores
            base = base_scores["composite"]
            gain = self.env_config.return_gain(self.run_config.reward, self.scores, base_scores)
            reward = gain - (before - self.potential0)
            self._episode = None
            info.update(episode_end=True, base_composite=base, episode_return=float(self.scores["composite"] - base))
        else:
            self.observed = result.scores
            reward = self.observed[OBSERVED_COMPOSITE] - before
        # After the last phase the observation keeps the last observe reading (nothing acts on it).
        obs = self._observe(self.phase, result.norms)
        if not last:
            self.observations.append(obs.tolist())
        return obs, float(reward), False, last, info

    def act_greedily(self, job: Job) -> tuple[Schedule, dict]:
        obs, _ = self.reset(options=job.options())
        done = False
        while not done:
            action, _ = job.actor.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = self.step(action)
            done = terminated or truncated
        if "diverged" in info:
            raise FloatingPointError(f"greedy rollout on task {job.task_seed} diverged: {info['diverged']}")
        return self.schedule(name=job.label), dict(self.scores)

    def decode(self, phase: int, action: np.ndarray) -> Phase:
        """The controls ``action`` sets for phase ``phase`` (a residual around the prior's)."""
        held = self.prior_phases[phase]
        return self.controls.phase(apply_residual(self.prior[phase], action), 1.0 / self.env_config.phases, held)

    # -- helpers -----------------------------------------------------------------------------------
    def _observe(self, phase: int, norms: dict[str, list[float]] | None) -> np.ndarray:
        return self.observer(self.observed, phase, norms, self.cosines, self.observed_base, self.start_reading)

    def schedule(self, name: str = "") -> Schedule:
        """The phases this episode has run so far, as a portable schedule."""
        return Schedule(phases=list(self._phases), layer_groups=self.controls.groups, name=name)


def _stable_row(result) -> dict:
    # Wall-clock seconds would make two identical steps report different infos (and fail
    # gymnasium's determinism check); the trainer times episodes itself.
    row = result.to_row()
    row.pop("seconds", None)
    return row


def _controls_row(phase) -> dict:
    row = {t: {"share": round(c.share, 4), "train": c.train, "output": c.output} for t, c in phase.tools.items()}
    if phase.merge is not None:
        row["merge"] = phase.merge.to_dict()
    return row
