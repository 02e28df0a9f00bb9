"""Data-parallel runs (accelerate DDP, 2 CPU processes on gloo): replicas stay identical across tool
switches, the naive wrapping drifts, and a 2-process transfer equals the 1-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metactl.config import load_config
from metactl.paths import CONFIGS

pytestmark = pytest.mark.ddp

RUN = ["training.total_steps=8", "training.layer_groups=2"]


def _launch(*args: str) -> subprocess.CompletedProcess:
    """``torchrun`` 2 fresh CPU processes (gloo) on a script: a fork of this pytest process would
    inherit its threads (log writers) and may deadlock."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)


def _spreads(naive: bool) -> dict[str, float]:
    args = (str(Path(__file__).with_name("ddp_switch_check.py")), *(["--naive"] if naive else []))
    res = _launch(*args)
    if res.returncode != 0 and "SIGABRT" in res.stderr:
        # gloo's teardown aborts a rank now and then under a loaded machine (seen twice in full
        # parallel test runs, never alone; metactl/parallel.py's barrier before end_training made it
        # rare, not gone). One rerun tells that flake from a real failure, which repeats.
        res = _launch(*args)
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_every_adapter_stays_identical_across_processes_after_a_tool_switch():
    spreads = _spreads(naive=False)
    assert spreads["world"] == 2
    assert spreads["moved/sft"] > 1e-4 and spreads["moved/dpo"] > 1e-4, spreads
    assert spreads["grad/sft"] == 0.0 and spreads["grad/dpo"] == 0.0, spreads
    assert spreads["params/sft"] == 0.0 and spreads["params/dpo"] == 0.0, spreads


def test_the_naive_wrapping_leaves_the_second_tool_unsynchronised():
    """The negative control: the check above would notice the trap."""
    spreads = _spreads(naive=True)
    assert spreads["grad/sft"] == 0.0 and spreads["params/sft"] == 0.0, spreads
    assert spreads["grad/dpo"] > 1e-5 and spreads["params/dpo"] > 1e-6, spreads


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
        rows[name] = {
            r["label"]: r for r in map(json.loads, (tmp_path / name / "results.jsonl").read_text().splitlines())
        }
    assert set(rows["one"]) == set(rows["two"]) == {"learned", "default"}
    for label, a in rows["one"].items():
        b = rows["two"][label]
        assert a["scores"]["kl"] > 1e-4, "the runs should have trained something"
        for key, value in a["scores"].items():
            assert b["scores"][key] == pytest.approx(value, abs=1e-4), (label, key)
    assert {p.name for p in (tmp_path / "two" / "adapters").iterdir()} == {"sft", "dpo", "retain"}
    assert (tmp_path / "two" / "comparison.txt").is_file()


def test_a_batch_smaller_than_the_process_count_fails_with_the_fix():
    from metactl.errors import ConfigError
    from metactl.parallel import check_batches_cover

    cfg = load_config(None, ["tools.sft.batch_size=3"])
    check_batches_cover(cfg.tools, 3)  # uneven slices (1, 1, 1 here; 6, 5, 5 of 16) are weighed, not refused
    with pytest.raises(
        ConfigError, match=r"tools.sft.batch_size=3 gives a batch of 3, fewer rows than the 4 processes.*batch_size=4"
    ):
        check_batches_cover(cfg.tools, 4)
    with pytest.raises(ConfigError, match="the task's 2 dpo rows gives a batch of 2"):
        check_batches_cover(cfg.tools, 3, rows={"sft": 100, "dpo": 2, "retain": 100})
