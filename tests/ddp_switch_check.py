"""Run by tests/test_parallel.py under ``torchrun --nproc_per_node 2``: does every adapter stay
identical across the processes when the runner switches from one tool to another?

Prints one JSON line (rank 0): the largest difference between the ranks of each tool's gradients
after a switch, and of each tool's weights after a whole interleaved phase, and how far training
moved them. ``--naive`` wraps the model the way the trap does (only the first tool trainable at
``prepare``), as a negative control.
"""

from __future__ import annotations

import argparse
import json

import torch

from metactl.config import load_config
from metactl.parallel import DataParallel
from metactl.runner import Engine
from metactl.schedule import parse_schedule

RUN = ["training.total_steps=8", "training.layer_groups=2"]


class NaiveDataParallel(DataParallel):
    """The trap: wrap while only the first tool's adapter is trainable (a plain ``prepare`` after
    the runner's usual set-up)."""

    def wrap(self, adapters):
        adapters.trainable(adapters.tools[0], [[1.0] * adapters.layer_map.groups] * 2)
        wrapped = self.accelerator.prepare_model(adapters.model)
        adapters.freeze()
        return wrapped


def spread(par: DataParallel, tensors: list[torch.Tensor]) -> float:
    """Largest difference between any two ranks' copies of ``tensors``."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).unsqueeze(0)
    every = par.accelerator.gather(flat)
    return float((every - every[0]).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive", action="store_true")
    naive = ap.parse_args().naive
    torch.set_num_threads(1)
    par = (NaiveDataParallel if naive else DataParallel).from_launch("cpu")
    finished = False
    try:
        engine = Engine(load_config(None, RUN), progress=False, parallel=par)
        ep = engine.episode(0)
        full = [[1.0] * engine.layer_map.groups] * 2
        out: dict[str, float] = {"world": par.world}
        engine.adapters.activate(["sft", "dpo"])
        for tool in ("sft", "dpo"):  # the switch: dpo trains after sft did
            engine.adapters.trainable(tool, full)
            loss, _ = ep._loss(engine.task.tools[tool])  # the runner's own sharded, reweighted loss
            loss.backward()
            grads = [p.grad for p in engine.adapters.params_of(tool)]
            if any(g is None for g in grads):
                raise SystemExit(f"{tool} got no gradient")
            out[f"grad/{tool}"] = spread(par, grads)
            others = [p for t in engine.tool_names if t != tool for p in engine.adapters.params_of(t)]
            if any(p.grad is not None for p in others):
                raise SystemExit("an adapter that does not train must keep grad None")
            engine.model.zero_grad(set_to_none=True)
        engine.adapters.freeze()
        sched = parse_schedule({"schema_version": 1, "layer_groups": 2, "phases": [
            {"fraction": 1.0, "tools": {"sft": {"share": 1}, "dpo": {"share": 1}}}]})
        ep = engine.episode(1)
        before = {t: [p.detach().clone() for p in engine.adapters.params_of(t)] for t in ("sft", "dpo")}
        ep.run_phase(sched.phases[0], steps=6, score=False)
        for tool in ("sft", "dpo"):
            now = engine.adapters.params_of(tool)
            out[f"params/{tool}"] = spread(par, now)
            out[f"moved/{tool}"] = max(float((a - b).abs().max()) for a, b in zip(now, before[tool]))
        if par.is_main:
            print(json.dumps(out), flush=True)
        finished = True
    finally:
        par.end(wait=finished)


if __name__ == "__main__":
    main()
