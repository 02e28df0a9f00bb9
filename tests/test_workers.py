"""Pool workers exit when the process that started them dies, even mid-task."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from metactl.workers import exit_with_parent

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                               initargs=(0.1,))
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 120)  # a long task, as order_effects.py hands each worker
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie (exited, not yet reaped by whoever adopted it) is gone for this purpose
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_worker_busy_with_a_long_task_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.5)  # the worker has taken the long task
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the orphaned worker is still running"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):  # leave nothing running if the assertion failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)


SUBPROC_PARENT = """
import os, sys, time
from functools import partial

import gymnasium as gym
import numpy as np

from metactl.envs.vector import vectorise


class Napper(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self):
        self.pid = os.getpid()

    def nap(self, seconds):  # a long command, as an evaluation's run_jobs is
        time.sleep(seconds)


if __name__ == "__main__":
    venv = vectorise([Napper, Napper], "subproc")
    print(" ".join(str(p) for p in venv.get_attr("pid")), flush=True)
    venv.env_method("nap", 120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_subproc_env_workers_busy_with_a_command_exit_when_the_run_is_killed(tmp_path: Path) -> None:
    """SubprocVecEnv starts its workers through the fork server, so their OS parent is the fork
    server, which outlived the killed run; the workers watch the run's own pid."""
    script = tmp_path / "parent.py"
    script.write_text(SUBPROC_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        time.sleep(0.5)  # both are inside nap()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "an orphaned env worker is still running"
    finally:
        parent.kill()
        for w in workers:
            if _alive(w):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w, signal.SIGKILL)
