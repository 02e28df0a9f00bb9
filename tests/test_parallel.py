"""Data-parallel runs (accelerate DDP, 2 CPU processes on gloo): replicas stay identical across tool
switches, the naive wrapping drifts, and a 2-process transfer equals the 1-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metactl.config import load_config
from metactl.parallel import DataParallel
from metactl.paths import CONFIGS

pytestmark = pytest.mark.ddp

RUN = ["training.total_steps=8", "training.layer_groups=2"]


class NaiveDataParallel(DataParallel):
    """The trap: wrap while only the first tool's adapter is trainable (what a plain
    ``prepare`` after the runner's usual set-up does)."""

    def wrap(self, adapters):
        adapters.trainable(adapters.tools[0], [[1.0] * adapters.layer_map.groups] * 2)
        wrapped = self.accelerator.prepare_model(adapters.model)
        adapters.freeze()
        return wrapped


def _spread(par: DataParallel, tensors: list[torch.Tensor]) -> float:
    """Largest difference between any two ranks' copies of ``tensors``."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]).unsqueeze(0)
    every = par.accelerator.gather(flat)
    return float((every - every[0]).abs().max())


def _grads_after_switch(naive: bool) -> dict[str, float]:
    """Rank by rank: train sft one step, switch to dpo; the spread of each tool's gradients and of
    all adapters after a whole interleaved sft/dpo phase run by the runner."""
    from accelerate.state import AcceleratorState

    from metactl.parallel import DataParallel
    from metactl.runner import Engine
    from metactl.schedule import parse_schedule

    torch.set_num_threads(1)
    # The launcher forks this pytest process, whose earlier tests (trl) may have built accelerate's
    # per-process state as one process; start each rank from a clean state.
    AcceleratorState._reset_state(reset_partial_state=True)
    par = (NaiveDataParallel if naive else DataParallel).from_launch("cpu")
    assert par.world == 2
    try:
        engine = Engine(load_config(None, RUN), progress=False, parallel=par)
        ep = engine.episode(0)
        full = [[1.0] * engine.layer_map.groups] * 2
        spreads: dict[str, float] = {}
        engine.adapters.activate(["sft", "dpo"])
        for tool in ("sft", "dpo"):  # the switch: dpo trains after sft did
            engine.adapters.trainable(tool, full)
            loss, _ = ep._loss(engine.task.tools[tool])
            loss.backward()
            grads = [p.grad for p in engine.adapters.params_of(tool)]
            assert all(g is not None for g in grads), f"{tool} got no gradient"
            spreads[f"grad/{tool}"] = _spread(par, grads)
            others = [p for t in engine.tool_names if t != tool for p in engine.adapters.params_of(t)]
            assert all(p.grad is None for p in others), "an adapter that does not train must keep grad None"
            engine.model.zero_grad(set_to_none=True)
        engine.adapters.freeze()
        sched = parse_schedule({"schema_version": 1, "layer_groups": 2, "phases": [
            {"fraction": 1.0, "tools": {"sft": {"share": 1}, "dpo": {"share": 1}}}]})
        ep = engine.episode(1)
        before = {t: [p.detach().clone() for p in engine.adapters.params_of(t)] for t in ("sft", "dpo")}
        ep.run_phase(sched.phases[0], steps=6, score=False)
        for tool in ("sft", "dpo"):
            now = engine.adapters.params_of(tool)
            spreads[f"params/{tool}"] = _spread(par, now)
            spreads[f"moved/{tool}"] = max(float((a - b).abs().max()) for a, b in zip(now, before[tool]))
        return spreads
    finally:
        par.end()


def _check(naive: bool) -> None:
    spreads = _grads_after_switch(naive)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(spreads))
    assert spreads["moved/sft"] > 1e-4 and spreads["moved/dpo"] > 1e-4, spreads
    assert spreads["grad/sft"] == 0.0 and spreads["params/sft"] == 0.0, spreads
    if naive:
        assert spreads["grad/dpo"] > 1e-5 and spreads["params/dpo"] > 1e-6, spreads
    else:
        assert spreads["grad/dpo"] == 0.0 and spreads["params/dpo"] == 0.0, spreads


def test_every_adapter_stays_identical_across_processes_after_a_tool_switch():
    from accelerate import debug_launcher

    debug_launcher(_check, args=(False,), num_processes=2)


def test_the_naive_wrapping_leaves_the_second_tool_unsynchronised():
    """The negative control: the check above would notice the trap."""
    from accelerate import debug_launcher

    debug_launcher(_check, args=(True,), num_processes=2)


def _transfer(out: Path, processes: int) -> subprocess.CompletedProcess:
    cmd = ["-m", "metactl", "transfer", str(CONFIGS / "schedules" / "expert.yaml"), "--model", "proxy-tiny",
           "--steps", "24", "--task-seed", "1000", "--out", str(out), "--quiet"]
    if processes > 1:
        cmd = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *cmd], check=False, capture_output=True, text=True, env=env, timeout=600)


def test_a_two_process_transfer_equals_the_one_process_transfer(tmp_path):
    one, two = _transfer(tmp_path / "one", 1), _transfer(tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout and two.stdout.count("gain over base") == 1  # one table, from rank 0
    rows = {}
    for name in ("one", "two"):
        rows[name] = {r["label"]: r for r in map(json.loads, (tmp_path / name / "results.jsonl").read_text().splitlines())}
    assert set(rows["one"]) == set(rows["two"]) == {"learned", "default"}
    for label, a in rows["one"].items():
        b = rows["two"][label]
        assert a["scores"]["kl"] > 1e-4, "the runs should have trained something"
        for key, value in a["scores"].items():
            assert b["scores"][key] == pytest.approx(value, abs=1e-4), (label, key)
    assert {p.name for p in (tmp_path / "two" / "adapters").iterdir()} == {"sft", "dpo", "retain"}
    assert (tmp_path / "two" / "comparison.txt").is_file()


def test_a_batch_that_does_not_split_across_processes_fails_before_weights_load(tmp_path, monkeypatch):
    from metactl.errors import ConfigError
    from metactl.parallel import check_batches_divide

    cfg = load_config(None, ["tools.sft.batch_size=15"])
    with pytest.raises(ConfigError, match=r"tools.sft.batch_size: got 15, which does not split across 2 processes.*batch_size=14"):
        check_batches_divide(cfg.tools, 2)
    check_batches_divide(cfg.tools, 1)
