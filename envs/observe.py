"""What a controller sees: fixed-size, bounded float32 vectors built from the engine's state."""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from metactl.interference import pair_names
from metactl.runner import Engine
from metactl.tasks.suite import SPLITS

FEATURE_BOUND = 5.0
NORM_BOUND = 5.0


def score_keys(engine: Engine) -> list[str]:
    """Per-behaviour accuracies on both splits, then stability and CKA (all in [0, 1])."""
    names = [b.name for b in engine.task.suite.behaviours]
    return [f"{s}/{b}" for s in SPLITS for b in names] + ["stability", "cka"]


def feature_keys(engine: Engine) -> list[str]:
    return sorted(engine.task.suite.features)


class Observer:
    """Encodes scores, progress, adapter norms, interference and task features.

    Layout (each block's bounds): scores then composite / its maximum ([0, 1]); one-hot phase
    index and fraction of budget left ([0, 1]); ``log1p`` of each tool's update norm per layer
    group ([0, 5]); gradient cosine per tool pair per group ([-1, 1]); the task's features
    ([-5, 5]). Every value is clipped into its bounds so observations always lie in the space.
    """

    def __init__(self, engine: Engine, phases: int, with_progress: bool = True) -> None:
        self.engine = engine
        self.phases = phases
        self.scores = score_keys(engine)
        self.features = feature_keys(engine)
        self.tools = list(engine.tool_names)
        self.groups = engine.layer_map.groups
        self.pairs = pair_names(self.tools)
        self.with_progress = with_progress
        w = engine.config.reward
        self.max_composite = w.target + w.heldout + w.stability
        lows, highs, labels = [], [], []

        def block(names: list[str], lo: float, hi: float) -> None:
            labels.extend(names)
            lows.extend([lo] * len(names))
            highs.extend([hi] * len(names))

        block(self.scores + ["composite"], 0.0, 1.0)
        if with_progress:
            block([f"phase={i}" for i in range(phases)] + ["budget_left"], 0.0, 1.0)
            block([f"norm/{t}/{g}" for t in self.tools for g in range(self.groups)], 0.0, NORM_BOUND)
            block([f"cos/{p}/{g}" for p in self.pairs for g in range(self.groups)], -1.0, 1.0)
        block([f"feature/{f}" for f in self.features], -FEATURE_BOUND, FEATURE_BOUND)
        self.labels = labels
        self.low = np.array(lows, dtype=np.float32)
        self.high = np.array(highs, dtype=np.float32)

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
        vec = [scores[k] for k in self.scores] + [scores["composite"] / self.max_composite]
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
