"""Worker processes that do not outlive the process that started them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


def exit_with_parent(poll_seconds: float = 1.0, parent: int | None = None) -> None:
    """Exit this process as soon as its parent is gone. For a process pool's ``initializer``.

    A ``ProcessPoolExecutor`` worker notices a dead parent only when it next reads its call queue, so a
    worker handed a long task (``order_effects.py --jobs``: all of its pairs, one engine per process)
    went on computing for half an hour after its parent was killed, on cores the user thought free.
    A daemon thread polls ``os.getppid()``, which changes when the process is re-parented.

    ``parent``: the pid of the process this one serves, where that is not its OS parent. A worker
    started through the ``forkserver`` start method (SB3's SubprocVecEnv, the sharded population
    engine) is the fork server's child, and a killed run left its fork server and both env workers
    computing an evaluation for minutes; such a worker watches the pid it is given instead.
    """
    direct = parent is None or parent == os.getppid()
    watched = os.getppid() if parent is None else parent

    def gone() -> bool:
        return os.getppid() != watched if direct else not _alive(watched)

    def watch() -> None:
        while not gone():
            time.sleep(poll_seconds)
        os._exit(1)  # no cleanup to wait for: the parent that would read the results is gone

    threading.Thread(target=watch, name="metactl-exit-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie (exited, not yet reaped) is gone for this purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return os.name != "posix" or not os.path.isdir("/proc")


def watched_by(parent: int, make: Callable[[], Any]) -> Any:
    """``make()`` in a worker that exits once ``parent`` is gone (an env factory for SubprocVecEnv,
    bound with functools.partial so that it pickles)."""
    exit_with_parent(parent=parent)
    return make()
