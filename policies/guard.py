"""A closed-loop policy that acts on its own averaged actions where its readings are unlike any training task's.

Why: an MLP policy trained on some task families extrapolates without bound on readings from a family
it never saw. On the held-out ``style-clash`` family two of five default controller seeds collapse
(gain +0.5 to +0.8 where the same policies' ``averaged`` schedules score +1.2 to +1.5,
docs/controller_results_wide96_antithetic.md). Clipping the actions into their training range
(``enveloped``, policies/envelope.py) kept that reading and barely helped. The guard asks the
question one step earlier: does this observation lie where the policy was trained? Where it does
not, the phase runs the policy's mean action over its training rollouts at that phase (nearly the
``averaged`` schedule); where it does, the policy acts closed loop as trained.

"Where it was trained" is measured on the same greedy rollouts on training tasks that make
``averaged`` and ``envelope.json``, nothing else: each observation entry is scaled by its spread over
those rollouts, the distance of an observation is the root mean square of the scaled differences to
its nearest training observation at the same phase, and a phase's threshold is the largest
leave-one-out distance among the training rollouts themselves (times ``margin``), so that no training
rollout would have tripped it. The clock (phase one-hot, budget left) is left out: the comparison is
per phase already. Nothing hand-written enters the guard. Acting per phase it holds no state, so one
copy can act for several episodes at once (the batched env interleaves them phase by phase), unless
``hold`` is set: then, from the first unfamiliar phase, the rest of the episode runs the fallback too
(the readings after it come from a trajectory the policy never trained on), kept per batch row.

Measured on the default's runs (docs/controller.md, "The guarded closed loop, measured"): it falls
back mostly on the held-out families, lifts the two seeds that collapse there, and stays below their
``averaged`` schedules; an option, not the default.

The guard is plain JSON in the run dir (``guard.json``), read without executing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metactl.envs.observe import block_of
from metactl.errors import ConfigError
from metactl.policies.envelope import phase_reader
from metactl.rundir import atomic_write_text, read_versioned_json

GUARD_VERSION = 1
CLOCK_BLOCKS = ("phase", "budget_left")
# Entries that barely move over the training rollouts still get a unit of this size (observation
# entries are accuracies, cosines and bounded log-ratios, all O(1)): a hundredth is far above float
# noise, and an entry held constant in training that moves by more on a new suite is a reading the
# policy never saw.
SCALE_FLOOR = 1e-2


@dataclass(eq=False)
class ObservationGuard:
    """The observations and actions of ``len(observations)`` greedy rollouts on training tasks."""

    observations: list[list[list[float]]]  # [rollouts][phases][observation entries]
    actions: list[list[list[float]]]  # [rollouts][phases][action entries]
    labels: list[str]  # the observation's entry names (a run with another layout cannot use it)
    margin: float = 1.0
    scale: np.ndarray = field(init=False, repr=False)
    thresholds: list[float] = field(init=False)
    fallback: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            obs = np.asarray(self.observations, dtype=float)
            act = np.asarray(self.actions, dtype=float)
            margin = float(self.margin)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"guard: observations and actions must be [rollouts][phases][entries] of numbers "
                              f"and margin a number ({exc})") from exc
        if obs.ndim != 3 or act.ndim != 3 or obs.shape[:2] != act.shape[:2]:
            raise ConfigError(f"guard: observations and actions must be [rollouts][phases][entries] with the same "
                              f"rollouts and phases, got {list(obs.shape)} and {list(act.shape)}")
        if obs.shape[0] < 2:
            raise ConfigError(f"guard: needs at least 2 rollouts (its threshold is a leave-one-out distance), got "
                              f"{obs.shape[0]}")
        if obs.shape[2] != len(self.labels):
            raise ConfigError(f"guard: {len(self.labels)} labels for observations of {obs.shape[2]} entries")
        if not (np.isfinite(obs).all() and np.isfinite(act).all()):
            raise ConfigError("guard: observations and actions must be finite numbers")
        if not margin > 0:
            raise ConfigError(f"guard: margin must be > 0 (a multiple of the training rollouts' own largest "
                              f"leave-one-out distance), got {self.margin}")
        self.margin = margin
        self._obs = obs
        self._entries = [i for i, label in enumerate(self.labels) if block_of(label) not in CLOCK_BLOCKS]
        if not self._entries:
            raise ConfigError("guard: the observation has no entries besides its clock to compare")
        self.scale = np.maximum(obs[:, :, self._entries].reshape(-1, len(self._entries)).std(axis=0), SCALE_FLOOR)
        self.fallback = act.mean(axis=0)
        self.thresholds = [margin * self._leave_one_out(p) for p in range(self.phases)]

    @property
    def rollouts(self) -> int:
        return self._obs.shape[0]

    @property
    def phases(self) -> int:
        return self._obs.shape[1]

    def _distances(self, phase: int, obs: np.ndarray) -> np.ndarray:
        ref = self._obs[:, phase, self._entries]
        diff = (np.asarray(obs, dtype=float)[self._entries] - ref) / self.scale
        return np.sqrt((diff**2).mean(axis=1))

    def _leave_one_out(self, phase: int) -> float:
        worst = 0.0
        for r in range(self.rollouts):
            d = self._distances(phase, self._obs[r, phase])
            worst = max(worst, float(np.delete(d, r).min()))
        return worst

    def distance(self, phase: int, obs: np.ndarray) -> float:
        """How far ``obs`` lies from the nearest training observation at ``phase``, in scaled units."""
        if not 0 <= phase < self.phases:
            raise ValueError(f"phase {phase} is outside the guard's {self.phases} phases")
        return float(self._distances(phase, obs).min())

    def unfamiliar(self, phase: int, obs: np.ndarray) -> bool:
        return self.distance(phase, obs) > self.thresholds[phase]

    def save(self, path: Path) -> None:
        data = {"version": GUARD_VERSION, "margin": self.margin, "labels": list(self.labels),
                "observations": self._obs.tolist(), "actions": np.asarray(self.actions, dtype=float).tolist()}
        atomic_write_text(Path(path), json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: Path, margin: float | None = None) -> ObservationGuard:
        """The guard in ``path``; ``margin`` (when given) replaces the saved one."""
        data = read_versioned_json(path, "guard", GUARD_VERSION, {"observations", "actions", "labels", "margin"})
        return cls(data["observations"], data["actions"], list(data["labels"]),
                   data["margin"] if margin is None else margin)


class GuardedActor:
    """``actor`` (SB3's ``predict``) acting closed loop where ``guard`` finds the observation familiar,
    and on the guard's fallback action for the phase where it does not.

    ``hold``: once a phase's reading is unfamiliar, the rest of the episode runs the fallback too
    (the readings after it come from a trajectory the policy never trained on). The episode's state
    is kept per batch row and cleared at each phase-0 reading, so a copy acts for one episode at a
    time per row (evaluation jobs each unpickle their own)."""

    def __init__(self, actor: Any, guard: ObservationGuard, labels: list[str], hold: bool = False) -> None:
        if list(labels) != list(guard.labels):
            raise ConfigError("guard: it was taken on observations of another layout than this env's (labels differ); "
                              "it belongs to another run or env configuration")
        self.actor, self.guard, self.labels, self.hold = actor, guard, list(labels), bool(hold)
        self.phase_of = phase_reader(self.labels, guard.phases)
        self._held: dict[int, bool] = {}

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        action, state = self.actor.predict(observation, state, episode_start, deterministic)
        obs = np.asarray(observation)
        if obs.ndim == 1:
            return self._act(0, obs, action), state
        return np.stack([self._act(i, o, a) for i, (o, a) in enumerate(zip(obs, action))]), state

    def _act(self, row: int, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        # After the last phase the clock reads phase 0 or past the end; nothing acts on that
        # observation, the bound only keeps the index valid.
        phase = min(self.phase_of(obs), self.guard.phases - 1)
        if phase == 0:
            self._held[row] = False
        held = self.hold and self._held.get(row, False)
        if held or self.guard.unfamiliar(phase, obs):
            self._held[row] = True
            return self.guard.fallback[phase].astype(np.asarray(action).dtype)
        return action

    def __getstate__(self) -> dict:
        return {"actor": self.actor, "guard": self.guard, "labels": self.labels, "hold": self.hold}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["actor"], state["guard"], state["labels"], state.get("hold", False))
