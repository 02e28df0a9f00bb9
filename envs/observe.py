"""What a controller sees: fixed-size, bounded float32 vectors built from the engine's state.

Only what a user could read while training: the observe split's scores (training-distribution
probes and retain texts that no reported score uses), progress, adapter norms, the gradient
cosines between tools, and the task's features. No held-out or test probe is ever in it.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from metactl.interference import pair_names
from metactl.runner import Engine
from metactl.tasks.suite import OBSERVE, TaskSuite

OBSERVED_COMPOSITE = f"{OBSERVE}/composite"  # the observe split's composite: the shaping potential
FEATURE_BOUND = 5.0
NORM_BOUND = 5.0


def score_keys(suite: TaskSuite) -> list[str]:
    """Per-behaviour accuracies on the observe split, then its stability and CKA (all in [0, 1])."""
    return [f"{OBSERVE}/{b.name}" for b in suite.behaviours] + [f"{OBSERVE}/stability", f"{OBSERVE}/cka"]


def observation_labels(
    suite: TaskSuite, tools: list[str], groups: int, phases: int, with_progress: bool = True
) -> list[str]:
    """The name of every observation entry, in order; computable before any weights load, so a
    transfer can check that a controller's inputs mean the same thing on another model."""
    labels = score_keys(suite) + [OBSERVED_COMPOSITE]
    if with_progress:
        labels += [f"phase={i}" for i in range(phases)] + ["budget_left"]
        labels += [f"norm/{t}/{g}" for t in tools for g in range(groups)]
        labels += [f"cos/{p}/{g}" for p in pair_names(tools) for g in range(groups)]
    return labels + [f"feature/{f}" for f in sorted(suite.features)]


class Observer:
    """Encodes scores, progress, adapter norms, interference and task features.

    Layout (each block's bounds): observe-split scores, then their composite / its maximum
    (:meth:`metactl.scoring.RewardConfig.observed_composite`, [0, 1]); one-hot phase
    index and fraction of budget left ([0, 1]); ``log1p`` of each tool's update norm per layer
    group ([0, 5]); gradient cosine per tool pair per group ([-1, 1]); the task's features
    ([-5, 5]). Every value is clipped into its bounds so observations always lie in the space.
    """

    def __init__(self, engine: Engine, phases: int, with_progress: bool = True) -> None:
        self.engine = engine
        self.phases = phases
        suite = engine.task.suite
        self.scores = score_keys(suite)
        self.features = sorted(suite.features)
        self.tools = list(engine.tool_names)
        self.groups = engine.layer_map.groups
        self.pairs = pair_names(self.tools)
        self.with_progress = with_progress
        w = engine.config.reward
        self.max_composite = w.target + w.heldout + w.stability
        self.labels = observation_labels(suite, self.tools, self.groups, phases, with_progress)
        bounds = {"norm": (0.0, NORM_BOUND), "cos": (-1.0, 1.0), "feature": (-FEATURE_BOUND, FEATURE_BOUND)}
        lo_hi = [bounds.get(label.split("/")[0], (0.0, 1.0)) for label in self.labels]
        self.low = np.array([lo for lo, _ in lo_hi], dtype=np.float32)
        self.high = np.array([hi for _, hi in lo_hi], dtype=np.float32)

    @property
    def space(self) -> spaces.Box:
        return spaces.Box(self.low, self.high, dtype=np.float32)

    def __call__(
        self,
        scores: dict[str, float],
        phase: int = 0,
        norms: dict[str, list[float]] | None = None,
        cosines: dict[str, list[float]] | None = None,
    ) -> np.ndarray:
        vec = [scores[k] for k in self.scores] + [scores[OBSERVED_COMPOSITE] / self.max_composite]
        if self.with_progress:
            vec += [1.0 if i == phase else 0.0 for i in range(self.phases)] + [1.0 - phase / self.phases]
            norms = norms or {}
            vec += [math.log1p(v) for t in self.tools for v in norms.get(t, [0.0] * self.groups)]
            cosines = cosines or {}
            vec += [c for p in self.pairs for c in cosines.get(p, [0.0] * self.groups)]
        feats = self.engine.task.suite.features
        vec += [float(feats.get(f, 0.0)) for f in self.features]
        arr = np.nan_to_num(np.array(vec, dtype=np.float32), nan=0.0)
        return np.clip(arr, self.low, self.high)
