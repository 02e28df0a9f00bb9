"""Data-parallel runs on accelerate: the one runner, with every process holding a model replica.

Launched with several processes (``accelerate launch``, ``torchrun``), the runner wraps its
``PeftModel`` with ``Accelerator.prepare`` (DDP) and every process trains on its slice of the
same global batch: all ranks draw the batch from the same seeded generator and keep rows
``rank::world``, so a 2-process run sees exactly the batches of a 1-process run and the gradients
DDP averages equal the single-process ones (each rank's loss is reweighted by its share of the
batch's tokens or rows, see :meth:`DataParallel.scale`).

**The multi-adapter DDP trap.** DDP decides at wrap time which parameters it synchronises: those
that require a gradient then. The runner switches which adapter trains at every tool change, so
wrapping while only one adapter is trainable leaves every other adapter's gradients unsynchronised
once it starts to train: no error, the replicas silently drift apart (measured: a 0.04 gradient
difference against a 0.16 norm). The rule applied here: every adapter parameter is trainable at
``prepare`` time, DDP runs with ``find_unused_parameters=True``, and the runner then toggles
``requires_grad`` per tool as always. A parameter that is off in a step takes no part in the
graph, DDP marks it unused on every rank and leaves its ``.grad`` at ``None`` (so AdamW skips it,
exactly as in one process); the adapter that trains is synchronised (``tests/test_parallel.py``
checks the replicas stay bit-identical across tool switches, and that the trap does drift).

Reference passes (DPO's frozen base, base scores) run on the unwrapped model under
:func:`metactl.adapters.base_only`; scoring runs on every rank on identical weights. Only the
main process writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


def launched_world_size() -> int:
    """Processes this run was launched with (``torchrun`` / ``accelerate launch`` set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_as_main() -> bool:
    """Whether this process is rank 0 of its launch (or not launched by a multi-process launcher)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@dataclass
class DataParallel:
    """This process's place in a data-parallel run, and the few collective operations it needs."""

    accelerator: Any

    @classmethod
    def from_launch(cls, device: str = "cpu") -> DataParallel | None:
        """The run's :class:`DataParallel` when launched with several processes, else ``None``."""
        if launched_world_size() <= 1:
            return None
        from accelerate import Accelerator, DistributedDataParallelKwargs

        # Buffers (rotary tables) are identical on every rank: no need to broadcast them per forward.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
        # mixed_precision pinned: an `accelerate config` default of bf16 would otherwise autocast
        # every forward unasked, and a parallel run would no longer equal a one-process run.
        accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no", kwargs_handlers=[ddp])
        if accelerator.num_processes != launched_world_size():
            # accelerate keeps its state per process; one made before the launch variables were
            # set (an earlier single-process Accelerator) would make every rank train alone.
            raise RuntimeError(
                f"accelerate sees {accelerator.num_processes} process(es) but the launch has WORLD_SIZE="
                f"{launched_world_size()}; create no Accelerator/PartialState before metactl's own."
            )
        return cls(accelerator)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def wrap(self, adapters) -> torch.nn.Module:
        """DDP around ``adapters.model`` with every adapter parameter registered (see the module doc)."""
        for params in adapters.params.values():
            for p in params:
                p.requires_grad_(True)
        wrapped = self.accelerator.prepare_model(adapters.model)
        adapters.freeze()
        return wrapped

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (every rank drew the same ``index``)."""
        return index[self.rank :: self.world]

    def scale(self, units_mine: float, units_all: float) -> float:
        """Factor on this rank's mean loss so that DDP's average of the ranks' gradients is the
        gradient of the global batch's mean (``units``: tokens or rows the loss averages over)."""
        return self.world * units_mine / units_all

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over ranks (every rank gets the same number)."""
        return float(self.accelerator.reduce(value.detach().reshape(1).clone(), reduction="mean").item())

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def end(self, wait: bool = True) -> None:
        """Tear the process group down; ``wait=False`` on an error path (the other ranks may never
        reach the barrier, and a gloo barrier only times out after 30 minutes)."""
        # Destroying the process group avoids an occasional SIGABRT at interpreter exit (gloo). The
        # barrier first: a rank that tears its group down while another still talks to it can
        # abort the same way ("terminate called without an active exception").
        if wait:
            self.accelerator.wait_for_everyone()
        self.accelerator.end_training()


def check_batches_cover(tool_configs: dict, world: int, rows: dict[str, int] | None = None) -> None:
    """Every process needs at least one row of every batch (an empty slice has no loss to average).

    Uneven slices are fine (:meth:`DataParallel.scale` weighs them); ``rows`` (per tool, once the
    task is loaded) covers tools whose data is smaller than their batch size.
    """
    from metactl.errors import ConfigError

    for name, cfg in tool_configs.items():
        batch = min(cfg.batch_size, (rows or {}).get(name, cfg.batch_size))
        if batch < world:
            why = (
                f"tools.{name}.batch_size={cfg.batch_size}"
                if batch == cfg.batch_size
                else f"the task's {batch} {name} rows"
            )
            raise ConfigError(
                f"{why} gives a batch of {batch}, fewer rows than the {world} processes; every process needs one. "
                f"Use at least --set run.tools.{name}.batch_size={world}, or fewer processes."
            )
