"""The controller saved as the mean of its last updates' weights (``ppo.weight_average``).

With 8 episodes per update, each PPO update moves the policy along a noisy estimate of the gradient,
and the last update's weights are one draw from where training wanders at the end. Averaging the
weights of the last few updates (stochastic weight averaging, Izmailov et al. 2018, arXiv 1803.05407;
for deep RL, Nikishin et al. 2018, "Improving Stability in Deep Reinforcement Learning with Weight
Averaging") keeps what the updates agree on and cancels what they do not. Measured on the default
(docs/lever_swa.md), it moved nothing beyond seed noise: the seeds that collapse on `style-clash`
collapse with the averaged weights too, so it is an option, off by default.

Training itself is untouched: the running mean is kept beside the policy and only loaded into it
once, after the last update, before the controller is saved and acts (evaluation, the averaged
schedule, the envelope, transfer). Checkpoints carry the running sum (``weight_average.pt``, plain
tensors loaded with ``weights_only=True``), so a resumed run keeps the snapshots taken before it
was interrupted.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from metactl.rundir import atomic_write_bytes

WEIGHT_AVERAGE_FILE = "weight_average.pt"


def averaged_updates(updates: int, fraction: float) -> int:
    """How many of a run's last ``updates`` go into the mean: ``fraction`` of them, at least one."""
    return max(1, min(updates, round(fraction * updates)))


class WeightAverage:
    """Running mean of a module's floating-point state, one snapshot per call to :meth:`add`."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def add(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            if value.is_floating_point():
                acc = self.sums.get(key)
                self.sums[key] = value.double().clone() if acc is None else acc + value.double()
        self.count += 1

    def mean(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``like`` (a state dict) with every averaged entry replaced by its mean, in its own dtype."""
        if not self.count:
            raise RuntimeError("no weights were averaged yet")
        return {k: (self.sums[k] / self.count).to(v.dtype) if k in self.sums else v for k, v in like.items()}

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        torch.save({"count": torch.tensor(self.count), "sums": self.sums}, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> WeightAverage:
        state = torch.load(Path(path), weights_only=True, map_location="cpu")
        avg = cls()
        avg.count = int(state["count"])
        avg.sums = dict(state["sums"])
        return avg
