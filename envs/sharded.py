"""``vec_env: batched`` over several processes: the K episodes split into shards, one population each.

On CPU a population engine's step is made of small, memory-bound kernels (rank-8 LoRA products,
norms, rotary, attention over ~30 tokens) that two threads of one process share badly: two
1-thread processes step more episodes per second than one 2-thread process (``scripts/bench_runner.py``
measures both). :class:`ShardedVecEnv` therefore runs one
:class:`metactl.envs.batched.BatchedVecEnv` per process, each with ``run.training.threads``
threads and its share of the K episodes, and steps them all at once. Episodes are the same
whichever process runs them: each env keeps its global index, its seed and its own RNG.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from metactl.config import RunConfig
from metactl.envs.config import EnvConfig


def shard_sizes(n_envs: int, processes: int) -> list[int]:
    """``n_envs`` envs over at most ``processes`` processes, as evenly as possible."""
    processes = max(1, min(processes, n_envs))
    return [n_envs // processes + (1 if i < n_envs % processes else 0) for i in range(processes)]


def _portable(exc: BaseException) -> BaseException:
    """The worker's exception if it survives pickling, else a RuntimeError carrying its traceback."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: send the text instead
        return RuntimeError("".join(traceback.format_exception(exc)))


def _worker(conn, run: RunConfig, env: EnvConfig, size: int, offset: int, parent: int) -> None:
    import torch

    from metactl.envs.batched import BatchedVecEnv
    from metactl.workers import exit_with_parent

    # A fork server's child: an EOF on conn reaches it only between commands, and an evaluation is
    # one command of many episodes.
    exit_with_parent(parent=parent)

    torch.set_num_threads(run.training.threads)
    try:
        venv = BatchedVecEnv(run, env, size, offset=offset)
        conn.send(("ok", (venv.observation_space, venv.action_space)))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which raises it
        conn.send(("error", _portable(exc)))
        return
    while True:
        try:
            cmd, data = conn.recv()
        except EOFError:  # the parent is gone
            return
        try:
            if cmd == "reset":
                venv._seeds, venv._options = data
                result: Any = (venv.reset(), venv.reset_infos)
            elif cmd == "step":
                result = venv.step(data)
            elif cmd == "env_method":
                name, args, kwargs, local = data
                result = venv.env_method(name, *args, indices=local, **kwargs)
            elif cmd == "get_attr":
                result = venv.get_attr(*data)
            elif cmd == "set_attr":
                result = venv.set_attr(*data)
            elif cmd == "close":
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", result))
        except BaseException as exc:  # noqa: BLE001 - as above; the worker stays up for the next command
            conn.send(("error", _portable(exc)))


class ShardedVecEnv(VecEnv):
    """``n_envs`` phase envs in ``processes`` processes, each a population engine over its share."""

    def __init__(self, run: RunConfig, env: EnvConfig, n_envs: int, processes: int) -> None:
        sizes = shard_sizes(n_envs, processes)
        starts = np.cumsum([0, *sizes]).tolist()
        self._ranges = [(starts[p], starts[p + 1]) for p in range(len(sizes))]
        # forkserver (SB3's SubprocVecEnv default where it exists): no copy of the parent's torch state.
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        self._conns, self._procs = [], []
        for (lo, hi) in self._ranges:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, run, env, hi - lo, lo, os.getpid()), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.closed = False
        spaces = self._gather()
        super().__init__(n_envs, *spaces[0])

    def _gather(self, conns: Sequence | None = None) -> list[Any]:
        results, error = [], None
        for conn in conns if conns is not None else self._conns:
            try:
                status, value = conn.recv()
            except EOFError:
                proc = self._procs[self._conns.index(conn)]
                proc.join(timeout=5)
                status, value = "error", RuntimeError(
                    f"a vec_env batched worker process exited (code {proc.exitcode}); its error is printed above"
                )
            if status == "error" and error is None:
                error = value
            results.append(value)
        if error is not None:
            raise error
        return results

    # -- reset and step -------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        for conn, (lo, hi) in zip(self._conns, self._ranges):
            conn.send(("reset", (self._seeds[lo:hi], self._options[lo:hi])))
        results = self._gather()
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [info for _, infos in results for info in infos]
        return np.concatenate([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        for conn, (lo, hi) in zip(self._conns, self._ranges):
            conn.send(("step", actions[lo:hi]))

    def step_wait(self):
        results = self._gather()
        obs = np.concatenate([r[0] for r in results])
        rewards = np.concatenate([r[1] for r in results])
        dones = np.concatenate([r[2] for r in results])
        return obs, rewards, dones, [info for r in results for info in r[3]]

    # -- the rest of the VecEnv API, routed to the process holding each env ----------------------
    def _by_process(self, indices) -> list[tuple[int, list[int]]]:
        """(process, local indices) pairs for global ``indices``, in the order the indices come."""
        out: list[tuple[int, list[int]]] = []
        for i in self._get_indices(indices):
            p = next(p for p, (lo, hi) in enumerate(self._ranges) if lo <= i < hi)
            if not out or out[-1][0] != p:
                out.append((p, []))
            out[-1][1].append(i - self._ranges[p][0])
        return out

    def _call(self, cmd: str, indices, make_data) -> list[Any]:
        # Every process gets its request before any answer is read: the calls run in parallel.
        parts = self._by_process(indices)
        for p, local in parts:
            self._conns[p].send((cmd, make_data(local)))
        return [x for res in self._gather([self._conns[p] for p, _ in parts]) for x in (res or [])]

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return self._call("env_method", indices, lambda local: (method_name, method_args, method_kwargs, local))

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return self._call("get_attr", indices, lambda local: (attr_name, local))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        self._call("set_attr", indices, lambda local: (attr_name, value, local))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def close(self) -> None:
        if self.closed:
            return
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError):
                pass
        for proc in self._procs:
            proc.join(timeout=30)
        self.closed = True
