"""One greedy episode of the inspected policy (or of a fixed schedule), with everything it saw.

The same runner that trained the controller runs it here: the phase env for PPO (so each phase
is chosen from that episode's own observations), the bandit env for the bandit, and
:meth:`metactl.runner.Engine.run` for open-loop schedules. Besides the schedule and the final
scores, a trace keeps per phase the scores, each tool's update norm and the gradient cosines
between tools (read on the frozen base weights, which changes nothing in the episode).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metactl.envs.observe import OBSERVED_COMPOSITE
from metactl.errors import DivergedRun
from metactl.interference import gradient_cosines
from metactl.layer_grid import MODULE_KINDS
from metactl.runner import Engine, PhaseResult
from metactl.schedule import Phase, Schedule


@dataclass
class Decision:
    """One action of a closed-loop policy: what it saw and what it chose."""

    step: int  # phase index (phase env) or 0 (bandit: one action for the whole schedule)
    observation: np.ndarray
    action: np.ndarray
    controls: dict[str, float]  # the decoded controls, flat (see :func:`flat_controls`)


@dataclass
class Trace:
    label: str
    schedule: Schedule
    final: dict[str, float]  # full scores of the adapted model
    base: dict[str, float]
    # After each phase, on the observe split (what a controller reads; the reported probes are
    # read once, for ``final``).
    phase_scores: list[dict[str, float]] = field(default_factory=list)
    norms: list[dict[str, list[float]]] = field(default_factory=list)  # after each phase, per tool per group
    cosines: list[dict[str, list[float]]] = field(default_factory=list)  # before phase 0 and after each phase
    decisions: list[Decision] = field(default_factory=list)
    # Closed loop only: the env and SB3 policy that acted, kept so saliency reads the same ones.
    env: Any = None
    actor: Any = None


def flat_phase(phase: Phase, prefix: str = "", merge_tools: tuple[str, ...] = ()) -> dict[str, float]:
    """A phase's controls as ``{"dpo output attn g1": 0.42, ...}`` (names a reader can follow), with
    ``"sft merge": 1.0`` (or 0.0) for every tool of ``merge_tools`` (the merges an env's actions
    decide) and every tool the phase merges."""
    out = {}
    for t, c in phase.tools.items():
        out[f"{prefix}{t} share"] = c.share
        for what in ("train", "output"):
            grid = getattr(c, what)
            for k, kind in enumerate(MODULE_KINDS):
                for g, v in enumerate(grid[k]):
                    out[f"{prefix}{t} {what} {kind} g{g}"] = v
    merged = phase.merge.tools if phase.merge is not None else []
    for t in dict.fromkeys([*merge_tools, *merged]):
        out[f"{prefix}{t} merge"] = float(t in merged)
    return out


def flat_controls(schedule: Schedule, merge_tools: tuple[str, ...] = ()) -> dict[str, float]:
    out = {}
    for i, p in enumerate(schedule.phases):
        out.update(flat_phase(p, prefix=f"phase {i}: ", merge_tools=merge_tools))
    return out


def load_actor(controller: Path, env: Any):
    """The SB3 policy inside ``controller.zip`` (what acts greedily in ``env``); nothing unpickled."""
    from metactl.policies.sb3 import load_ppo

    return load_ppo(controller, env.observation_space, env.action_space).policy


def observed(engine: Engine, scores: dict | None, probes: int) -> dict[str, float]:
    """``scores`` when they are an observe-split reading, else a fresh one of the model as it is."""
    if scores and OBSERVED_COMPOSITE in scores:
        return dict(scores)
    return engine.task.observe_scorer(probes).score(engine.model)


def _record(engine: Engine, trace: Trace, result: PhaseResult, rows: int, probes: int) -> None:
    trace.phase_scores.append(observed(engine, result.scores, probes))
    trace.norms.append({t: list(v) for t, v in result.norms.items()})
    trace.cosines.append(gradient_cosines(engine, rows))


def run_schedule(
    engine: Engine, schedule: Schedule, episode_seed: int, label: str, observe_probes: int = 0, rows: int = 8
) -> Trace:
    """An open-loop schedule on the engine's current task, traced phase by phase."""
    engine.restore_base()  # the first reading is of fresh adapters on the model as loaded, whatever ran before
    engine.adapters.reset(episode_seed)
    trace = Trace(label, schedule, final={}, base=dict(engine.task.base_scores))
    trace.cosines.append(gradient_cosines(engine, rows))
    results = engine.run(
        schedule,
        seed=episode_seed,
        observe_probes=observe_probes,
        on_phase=lambda r: _record(engine, trace, r, rows, observe_probes),
    )
    trace.final = dict(results[-1].scores)
    return trace


def run_policy(engine: Engine, run_dir, task_seed: int, episode_seed: int, label: str) -> Trace:
    """The run's policy acting greedily on ``task_seed``: closed loop for SB3 controllers."""
    from metactl.envs import BANDIT_ENV_ID, make
    from metactl.policies import POLICIES

    cfg = run_dir.config
    engine.load_task(task_seed)
    quick, rows = cfg.env.quick_probes, cfg.env.interference_rows
    if run_dir.controller is None:  # searches and fixed schedules: the schedule is the decision
        return run_schedule(engine, run_dir.schedule.regroup(engine.layer_map.groups), episode_seed, label, quick, rows)
    options = {"task_seed": task_seed, "episode_seed": episode_seed}
    env_id = POLICIES[cfg.policy].env_id
    env = make(env_id, run=cfg.run, env=cfg.env, engine=engine)
    actor = load_actor(run_dir.controller, env)
    if env_id == BANDIT_ENV_ID:
        obs, _ = env.reset(options=options)
        action, _ = actor.predict(obs, deterministic=True)
        schedule = env.decode(action, name=label)
        trace = run_schedule(engine, schedule, episode_seed, label, quick, rows)
        trace.decisions.append(Decision(0, obs, np.asarray(action), flat_controls(schedule, env.space.merge)))
        trace.env, trace.actor = env, actor
        return trace
    obs, _ = env.reset(options=options)
    trace = Trace(
        label, Schedule([]), final={}, base=dict(engine.task.base_scores), cosines=[env.cosines], env=env, actor=actor
    )
    done, info = False, {}
    while not done:
        action, _ = actor.predict(obs, deterministic=True)
        step = env.phase
        obs_before = obs
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if "diverged" in info:
            raise DivergedRun(label, task_seed, episode_seed, info["diverged"])
        phase = env.schedule().phases[-1]
        controls = flat_phase(phase, merge_tools=env.controls.merge)
        trace.decisions.append(Decision(step, obs_before, np.asarray(action), controls))
        trace.phase_scores.append(observed(engine, None if done else info["result"]["scores"], quick))
        trace.norms.append(info["result"]["norms"])
        # The env skips the reading after the last phase (nothing acts on it); inspect wants it.
        trace.cosines.append(dict(env.cosines) if not done else gradient_cosines(engine, rows))
    trace.schedule = env.schedule(name=label)
    trace.final = dict(env.scores)
    return trace
