"""``scores.jsonl`` of a train-controller run: one row per (episode, phase), written as episodes end.

The rows of a running episode wait in memory until it ends, so the file only ever holds whole
episodes (and, after a kill, at most one torn last line, which readers skip).
"""

from __future__ import annotations

import logging
from pathlib import Path

from metactl.rundir import append_jsonl, read_jsonl, write_jsonl
from metactl.score_parts import reported_parts

log = logging.getLogger("metactl.train_controller")


class EpisodeLog:
    """Turns per-step infos into ``scores.jsonl`` rows, counts episodes, feeds TensorBoard."""

    def __init__(self, path: Path, start: int, writer=None, bar=None) -> None:
        self.path = path
        self.episodes = start
        self.writer = writer
        self.bar = bar
        self._pending: dict[int, list[dict]] = {}
        self.returns: list[float] = []
        self.restarts = 0

    def __call__(self, env_index: int, info: dict) -> None:
        rows = self._pending.setdefault(env_index, [])
        if info.get("worker_restarted"):
            self._lost(env_index, rows, info)
            return
        if "results" in info:  # bandit: one step holds every phase
            for r in info["results"]:
                rows.append(
                    {"phase": r["phase"], "result": r, "controls": _phase_controls(info["schedule"], r["phase"])}
                )
        elif "phase" in info:
            rows.append({"phase": info["phase"], "result": info.get("result"), "controls": info.get("controls")})
        if not info.get("episode_end"):
            return
        ret, diverged = float(info["episode_return"]), info.get("diverged")
        base = info.get("base_composite")
        episode = self.episodes
        if not rows:
            rows.append({"phase": 0, "result": None, "controls": None})
        for row in rows:
            append_jsonl(
                self.path,
                {
                    **_phase_row(episode, row),
                    "task_seed": info.get("task_seed"),
                    "episode_seed": info.get("episode_seed"),
                    "base_composite": base,
                    "return": ret if row is rows[-1] else None,
                    **({"diverged": diverged} if diverged and row is rows[-1] else {}),
                },
            )
        self._pending[env_index] = []
        self.episodes += 1
        self.returns.append(ret)
        if self.writer is not None:
            self.writer.add_scalar("episode/return", ret, episode)
            final = (rows[-1].get("result") or {}).get("scores") or {}
            for k in reported_parts(final):
                self.writer.add_scalar(f"episode/{k}", final[k], episode)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(ret=f"{ret:+.3f}", best=f"{max(self.returns):+.3f}")

    def _lost(self, env_index: int, rows: list[dict], info: dict) -> None:
        """A worker died mid-episode: its phases so far are logged, marked, and count against the budget
        (they were spent); the episode has no return, so the learning curve leaves it out."""
        episode = self.episodes
        log.warning(
            "episode %d: env worker %d died (%s); the episode is truncated and training goes on",
            episode,
            env_index,
            info.get("worker_error", "?"),
        )
        for row in rows:
            append_jsonl(self.path, {**_phase_row(episode, row), "return": None})
        append_jsonl(
            self.path,
            {
                "episode": episode,
                "phase": len(rows),
                "return": None,
                "worker_restarted": True,
                "worker_error": info.get("worker_error"),
            },
        )
        self._pending[env_index] = []
        self.episodes += 1
        self.restarts += 1
        if self.writer is not None:
            self.writer.add_scalar("episode/worker_restarts", self.restarts, episode)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(restarts=self.restarts)


def _phase_row(episode: int, row: dict) -> dict:
    """The fields every ``scores.jsonl`` row of a phase has."""
    result = row.get("result") or {}
    return {
        "episode": episode,
        "phase": row["phase"],
        "controls": row.get("controls"),
        "scores": result.get("scores"),
        "losses": result.get("losses"),
        "tool_steps": result.get("tool_steps"),
    }


def _phase_controls(schedule: dict, phase: int) -> dict | None:
    phases = schedule.get("phases") or []
    return phases[phase]["tools"] if phase < len(phases) else None


def cut_rows(path: Path, episodes: int) -> None:
    """Keep only rows of episodes before ``episodes`` (what the checkpoint knows about)."""
    write_jsonl(path, [r for r in read_jsonl(path, appended=True) if r.get("episode", 0) < episodes])
