"""Which observation features move the policy's controls, and which way.

For each decision the policy made, every observation feature is nudged by 10% of its range
(down and up, kept inside the observation bounds) and the greedy action is decoded into controls
both times: the difference is the feature's effect on every control, in that control's own
units (share, learning-rate multiplier, output scale). Decoding includes the env's clipping, so
a saturated control honestly shows no sensitivity. One batched forward pass per decision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

STEP = 0.1  # fraction of each feature's range


def perturbation_saliency(
    predict: Callable[[np.ndarray], np.ndarray],
    decode: Callable[[np.ndarray], dict[str, float]],
    obs: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> tuple[list[str], np.ndarray]:
    """Controls' names and a ``[features, controls]`` matrix: effect of +10% of each feature's range."""
    obs = np.asarray(obs, dtype=np.float32)
    span = (high - low).astype(np.float64)
    up = np.minimum(obs + STEP * span, high)
    down = np.maximum(obs - STEP * span, low)
    batch = np.repeat(obs[None], 2 * len(obs), axis=0)
    idx = np.arange(len(obs))
    batch[2 * idx, idx] = down
    batch[2 * idx + 1, idx] = up
    actions = predict(batch)
    controls = [decode(a) for a in actions]
    names = list(controls[0])
    values = np.array([[c[n] for n in names] for c in controls])
    moved = (up - down).astype(np.float64)
    scale = np.divide(STEP * span, moved, out=np.zeros_like(moved), where=moved > 0)
    effect = (values[1::2] - values[0::2]) * scale[:, None]
    return names, effect


def explain(
    names: list[str], effect: np.ndarray, features: list[str], obs: np.ndarray, chosen: dict[str, float],
    prior: dict[str, float], top: int = 3,
) -> list[dict]:
    """Per control the policy moved furthest from the prior, the features that move it most."""
    def acts(n: str) -> bool:
        # A tool that sits a phase out takes no steps there, so its train controls do nothing.
        head, sep, _ = n.partition(" train ")
        return not sep or chosen.get(f"{head} share", 1.0) > 0

    moved = sorted((n for n in names if acts(n)), key=lambda n: -abs(chosen[n] - prior[n]))[:top]
    out = []
    for n in moved:
        j = names.index(n)
        order = np.argsort(-np.abs(effect[:, j]))[:top]
        out.append(
            {
                "control": n,
                "chosen": chosen[n],
                "prior": prior[n],
                "because": [
                    {"feature": features[i], "value": float(obs[i]), "effect": float(effect[i, j])}
                    for i in order
                    if effect[i, j] != 0
                ],
            }
        )
    return out
