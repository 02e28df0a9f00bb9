"""Worker processes that do not outlive the process that started them."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """Exit this process as soon as its parent is gone. For a process pool's ``initializer``.

    A ``ProcessPoolExecutor`` worker notices a dead parent only when it next reads its call queue, so a
    worker handed a long task (``order_effects.py --jobs``: all of its pairs, one engine per process)
    went on computing for half an hour after its parent was killed, on cores the user thought free.
    A daemon thread polls ``os.getppid()``, which changes when the process is re-parented.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)  # no cleanup to wait for: the parent that would read the results is gone

    threading.Thread(target=watch, name="metactl-exit-with-parent", daemon=True).start()
