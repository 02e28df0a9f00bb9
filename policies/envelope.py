"""A closed-loop policy kept, phase by phase, inside the range of actions it took on training tasks.

Why: a controller trained on some task families reads observations from a family it never saw that
can lie outside anything it was trained on, and an MLP extrapolates there without bound. On the
held-out ``style-clash`` family two of five default controller seeds collapsed this way (gain +0.5
to +0.8 where the other seeds and the policy's own time-averaged schedule score +1.2 to +1.5,
docs/controller_results_wide96_antithetic.md), turning on DPO and retain in phases where none of its
training rollouts did. The envelope is the per-phase, per-dimension [min, max] of the policy's own
greedy actions on the training tasks the ``averaged`` schedule is made from; acting, the policy
still reads every observation and picks its action from them, and each entry is clipped into the
envelope of its phase. Nothing hand-written enters it: it is the learned policy's own behaviour on
training-distribution tasks, the same rollouts that make ``averaged``.

The envelope is plain JSON in the run dir (``envelope.json``), read without executing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metactl.envs.observe import block_of
from metactl.errors import ConfigError
from metactl.rundir import atomic_write_text, read_versioned_json

ENVELOPE_VERSION = 1


@dataclass
class ActionEnvelope:
    """Per phase, the lowest and highest value of each action entry over ``tasks`` greedy rollouts."""

    low: list[list[float]]
    high: list[list[float]]
    tasks: int

    def __post_init__(self) -> None:
        try:
            low, high = np.asarray(self.low, dtype=float), np.asarray(self.high, dtype=float)
            tasks = int(self.tasks)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"envelope: low and high must be [phases][action entries] of numbers and tasks an "
                              f"integer ({exc})") from exc
        if low.ndim != 2 or low.shape != high.shape or low.shape[0] == 0:
            raise ConfigError(f"envelope: low and high must be [phases][action entries] of one shape, got "
                              f"{list(low.shape)} and {list(high.shape)}")
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ConfigError("envelope: low and high must be finite numbers")
        bad = np.argwhere(low > high)
        if len(bad):
            p, d = bad[0]
            raise ConfigError(f"envelope: phase {p}, entry {d}: low {low[p, d]} is above high {high[p, d]}")
        if tasks < 1:
            raise ConfigError(f"envelope: tasks must be >= 1 (rollouts it was taken from), got {self.tasks}")

    @property
    def phases(self) -> int:
        return len(self.low)

    @classmethod
    def from_actions(cls, rollouts: list[list[list[float]]]) -> ActionEnvelope:
        """From each rollout's per-phase actions (rollouts of one length: episodes that ran every phase)."""
        if not rollouts:
            raise ValueError("an envelope needs at least one finished rollout")
        stacked = np.asarray(rollouts, dtype=float)  # [rollouts, phases, dim]
        return cls(stacked.min(axis=0).tolist(), stacked.max(axis=0).tolist(), len(rollouts))

    def clip(self, phase: int, action: np.ndarray) -> np.ndarray:
        if not 0 <= phase < self.phases:
            raise ValueError(f"phase {phase} is outside the envelope's {self.phases} phases")
        return np.clip(action, self.low[phase], self.high[phase]).astype(np.asarray(action).dtype, copy=False)

    def save(self, path: Path) -> None:
        data = {"version": ENVELOPE_VERSION, "tasks": self.tasks, "low": self.low, "high": self.high}
        atomic_write_text(Path(path), json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ActionEnvelope:
        data = read_versioned_json(path, "envelope", ENVELOPE_VERSION, {"low", "high", "tasks"})
        return cls(data["low"], data["high"], int(data["tasks"]))


def phase_reader(labels: list[str], phases: int) -> Any:
    """A function observation -> the phase about to run, from the observation's clock (the phase
    one-hot, else budget left). The envelope is per phase, so a controller that reads no clock
    (``env.hide`` lists both) cannot be enveloped."""
    onehot = [i for i, label in enumerate(labels) if block_of(label) == "phase"]
    if onehot and len(onehot) != phases:
        raise ConfigError(f"envelope: it holds {phases} phases, the observation's clock {len(onehot)}; the envelope "
                          "belongs to a run with another env.phases")
    if onehot:
        return lambda obs: int(np.argmax(np.asarray(obs)[onehot]))
    if "budget_left" in labels:
        at = labels.index("budget_left")
        return lambda obs: round((1.0 - float(np.asarray(obs)[at])) * phases)
    raise ConfigError(
        "compare: 'enveloped' clips actions per phase, but this controller's observation has no clock "
        "(env.hide lists phase and budget_left); drop 'enveloped' from compare or show the clock."
    )


class EnvelopedActor:
    """``actor`` (SB3's ``predict``) acting closed loop, each action clipped into its phase's envelope."""

    def __init__(self, actor: Any, envelope: ActionEnvelope, labels: list[str]) -> None:
        self.actor, self.envelope, self.labels = actor, envelope, list(labels)
        self.phase_of = phase_reader(self.labels, envelope.phases)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        action, state = self.actor.predict(observation, state, episode_start, deterministic)
        obs = np.asarray(observation)
        if obs.ndim == 1:
            return self.envelope.clip(self._phase(obs), action), state
        return np.stack([self.envelope.clip(self._phase(o), a) for o, a in zip(obs, action)]), state

    def _phase(self, obs: np.ndarray) -> int:
        # After the last phase the clock reads phase 0 (one-hot all zeros) or past the end (budget
        # left 0); nothing acts on that observation, the bound only keeps the index valid.
        return min(self.phase_of(obs), self.envelope.phases - 1)

    def __getstate__(self) -> dict:
        # The clock reader is a closure; rebuilt from the labels after unpickling in a worker.
        return {"actor": self.actor, "envelope": self.envelope, "labels": self.labels}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actor"], state["envelope"], state["labels"])
