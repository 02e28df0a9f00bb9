"""``train-controller``: spend an episode budget on a policy, checkpoint, resume, evaluate.

Run directory::

    config.yaml        resolved ControllerConfig (a resumed run reads it back)
    scores.jsonl       one row per (episode, phase): seeds, controls, losses, scores, reward
    checkpoints/       ckpt-<episodes>/ after every update: policy state + progress + env RNGs
    controller.zip     the trained SB3 model (ppo, bandit); search.pkl for the searches
    schedule.yaml      the policy's greedy schedule on the first held-out task
    eval.jsonl         one row per (method, held-out task): final scores and base scores
    tb/                TensorBoard: episode returns and parts; PPO's own losses under tb/<policy>

Checkpoints are directories written atomically (built aside, then renamed), so a kill leaves
either the previous complete checkpoint or the new one. ``scores.jsonl`` is cut back to the
checkpoint's episode count on resume, so rows are neither duplicated nor missing.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from envs.jobs import Job, write_adapter_files
from metactl.controller_config import ControllerConfig
from metactl.evaluation import PARTS, Evaluation, format_table
from metactl.io import append_jsonl, atomic_write_bytes, atomic_write_dir, atomic_write_text, claim_run_dir
from metactl.paths import resolve_schedule_path
from metactl.schedule import Schedule
from policies import POLICIES, Policy

log = logging.getLogger("metactl.trainer")
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


# -- the vectorised env -----------------------------------------------------------------------------
def make_venv(cfg: ControllerConfig, env_id: str, n_envs: int | None = None):
    """``n_envs`` copies of the env under ``cfg.vec_env`` (subprocesses, Ray actors or in-process)."""
    from envs.vector import make_venv as _make

    return _make(env_id, cfg.run, cfg.env, n_envs or cfg.n_envs, cfg.vec_env, cfg.ray)


def run_jobs(venv, jobs: list[Job]) -> list[dict]:
    """Run evaluation jobs spread over the VecEnv's workers (in parallel for SubprocVecEnv)."""
    n = venv.num_envs
    by_worker: dict[int, list[Job]] = {i: jobs[i::n] for i in range(n)}
    per_worker = venv.env_method("run_jobs", by_worker)
    out: list[dict] = [{}] * len(jobs)
    for i, results in enumerate(per_worker):
        for k, res in enumerate(results):
            out[i + k * n] = res
    for job, res in zip(jobs, out):
        files = res.pop("adapter_files", None)
        if job.save_adapters and files:
            write_adapter_files(job.save_adapters, files)
    return out


# -- episode log ------------------------------------------------------------------------------------
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
                rows.append({"phase": r["phase"], "result": r, "controls": _phase_controls(info["schedule"], r["phase"])})
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
            append_jsonl(self.path, {
                **_phase_row(episode, row), "task_seed": info.get("task_seed"), "episode_seed": info.get("episode_seed"),
                "base_composite": base, "return": ret if row is rows[-1] else None,
                **({"diverged": diverged} if diverged and row is rows[-1] else {}),
            })
        self._pending[env_index] = []
        self.episodes += 1
        self.returns.append(ret)
        if self.writer is not None:
            self.writer.add_scalar("episode/return", ret, episode)
            final = (rows[-1].get("result") or {}).get("scores") or {}
            for k in PARTS:
                if k in final:
                    self.writer.add_scalar(f"episode/{k}", final[k], episode)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(ret=f"{ret:+.3f}", best=f"{max(self.returns):+.3f}")


    def _lost(self, env_index: int, rows: list[dict], info: dict) -> None:
        """A worker died mid-episode: its phases so far are logged, marked, and count against the budget
        (they were spent); the episode has no return, so the learning curve leaves it out."""
        episode = self.episodes
        log.warning("episode %d: env worker %d died (%s); the episode is truncated and training goes on",
                    episode, env_index, info.get("worker_error", "?"))
        for row in rows:
            append_jsonl(self.path, {**_phase_row(episode, row), "return": None})
        append_jsonl(self.path, {"episode": episode, "phase": len(rows), "return": None, "worker_restarted": True,
                                 "worker_error": info.get("worker_error")})
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
    return {"episode": episode, "phase": row["phase"], "controls": row.get("controls"), "scores": result.get("scores"),
            "losses": result.get("losses"), "tool_steps": result.get("tool_steps")}


def _phase_controls(schedule: dict, phase: int) -> dict | None:
    phases = schedule.get("phases") or []
    return phases[phase]["tools"] if phase < len(phases) else None


def read_rows(path: Path) -> list[dict]:
    """Rows of ``scores.jsonl``; a torn last line (killed mid-write) is dropped with a warning."""
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: dropping a torn last line (the run was killed while writing it)", path)
                continue
            raise
    return rows


def cut_rows(path: Path, episodes: int) -> None:
    """Keep only rows of episodes before ``episodes`` (what the checkpoint knows about)."""
    rows = [r for r in read_rows(path) if r.get("episode", 0) < episodes]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# -- checkpoints ------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    path: Path
    episodes: int
    updates: int


def save_checkpoint(out: Path, policy: Policy, venv, episodes: int, updates: int) -> None:
    rngs = venv.get_attr("np_random")
    # RayVecEnv: restarts so far, so that a resumed run's restarted workers get seeds not used before.
    restarts = venv.lifetime_restarts() if hasattr(venv, "lifetime_restarts") else None

    def fill(tmp: Path) -> None:
        policy.save(tmp)
        atomic_write_bytes(tmp / "env_rngs.pkl", pickle.dumps(rngs))
        if restarts is not None:
            atomic_write_text(tmp / "env_restarts.json", json.dumps(list(restarts)))
        # Written last: a checkpoint without state.json is incomplete and is skipped.
        atomic_write_text(tmp / "state.json", json.dumps({"episodes": episodes, "updates": updates}))

    root = out / CHECKPOINTS
    atomic_write_dir(root / f"ckpt-{episodes:06d}", fill)
    for old in sorted(root.glob("ckpt-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoints(out: Path) -> list[Checkpoint]:
    """Complete checkpoints, newest first; incomplete ones are skipped with a warning."""
    found = []
    for d in sorted((out / CHECKPOINTS).glob("ckpt-*"), reverse=True):
        try:
            state = json.loads((d / "state.json").read_text())
            found.append(Checkpoint(d, int(state["episodes"]), int(state["updates"])))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("skipping incomplete checkpoint %s (%s)", d, exc)
    return found


def restore(out: Path, policy: Policy, venv) -> Checkpoint | None:
    for ckpt in find_checkpoints(out):
        try:
            policy.load(ckpt.path, venv)
            rngs = pickle.loads((ckpt.path / "env_rngs.pkl").read_bytes())
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint must not stop the resume
            log.warning("skipping unreadable checkpoint %s (%s: %s)", ckpt.path, type(exc).__name__, exc)
            continue
        venv._reset_seeds()  # keep the restored RNGs: no re-seeding at the next reset
        for i, rng in enumerate(rngs[: venv.num_envs]):
            venv.set_attr("np_random", rng, indices=[i])
        if hasattr(venv, "lifetime_restarts") and (ckpt.path / "env_restarts.json").is_file():
            saved = json.loads((ckpt.path / "env_restarts.json").read_text())
            venv.restarts_before[: len(saved)] = saved[: venv.num_envs]
        return ckpt
    return None


# -- evaluation -------------------------------------------------------------------------------------
def evaluate(cfg: ControllerConfig, venv, actors: dict[str, object], adapters: Path | None = None) -> Evaluation:
    """Each actor (Schedule or SB3-style policy) on every held-out task seed, same episode seed.

    With ``adapters``, the first actor's adapters on the first held-out task are saved there.
    """
    seed = cfg.run.training.seed
    jobs = []
    for label, actor in actors.items():
        for ts in cfg.eval_task_seeds:
            save = str(adapters) if adapters is not None and not jobs else None
            if isinstance(actor, Schedule):
                jobs.append(Job(ts, seed, schedule=actor, label=label, save_adapters=save))
            else:
                # Pickled up front with the plain pickler: torch's multiprocessing pickler
                # refuses parameters that require grad, and the worker only needs a copy.
                jobs.append(Job(ts, seed, actor=pickle.dumps(actor), label=label, save_adapters=save))
    return Evaluation(run_jobs(venv, jobs))


def comparison_actors(cfg: ControllerConfig) -> dict[str, Schedule]:
    groups = cfg.run.training.layer_groups
    return {name: Schedule.load(resolve_schedule_path(name)).regroup(groups) for name in cfg.compare}


# -- the job ----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out: Path
    episodes: int
    seconds: float
    evaluation: Evaluation
    schedule: Schedule


def train_controller(cfg: ControllerConfig, out: Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume) ``cfg.policy`` into ``out``, then evaluate it on the held-out tasks."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    out = Path(out)
    claim_run_dir(out, resume, "config.yaml", "train-controller run")
    if not resume:
        atomic_write_text(out / "config.yaml", cfg.to_commented_yaml())
    torch.set_num_threads(cfg.run.training.threads)
    t0 = time.perf_counter()
    policy = POLICIES[cfg.policy](cfg)
    writer = SummaryWriter(str(out / "tb"))
    try:
        venv = make_venv(cfg, policy.env_id)
    except BaseException:
        writer.close()
        raise
    try:
        policy.setup(venv, out / "tb")
        ckpt = restore(out, policy, venv) if resume else None
        done = ckpt.episodes if ckpt else 0
        updates = ckpt.updates if ckpt else 0
        cut_rows(out / "scores.jsonl", done)
        total = cfg.episodes if policy.learns else 0
        if ckpt:
            log.info("resuming %s after %d of %d episodes", out, done, total)
        with tqdm(total=total, initial=done, desc=f"train-controller [{cfg.policy}]", unit="episode",
                  disable=not progress or total == 0) as bar:
            episode_log = EpisodeLog(out / "scores.jsonl", done, writer, bar)
            while episode_log.episodes < total:
                policy.learn(venv, episode_log)
                updates += 1
                if updates % cfg.checkpoint_every == 0 or episode_log.episodes >= total:
                    save_checkpoint(out, policy, venv, episode_log.episodes, updates)
        policy.save(out)
        actors = {cfg.policy: policy.actor(), **comparison_actors(cfg)}
        evaluation = evaluate(cfg, venv, actors, adapters=out / "adapters")
    finally:
        policy.close()
        venv.close()
        writer.close()
    for row in evaluation.rows:
        append_jsonl(out / "eval.jsonl", {**{k: v for k, v in row.items() if k != "schedule"}})
    first = next(r for r in evaluation.rows if r["label"] == cfg.policy)
    schedule: Schedule = first["schedule"]
    schedule.name = f"{cfg.policy} greedy schedule on task seed {first['task_seed']}"
    schedule.save(out / "schedule.yaml")
    atomic_write_text(out / "base_model.txt", first["model_path"] + "\n")
    plot_learning_curve(out, evaluation)
    return TrainResult(out, episode_log.episodes, time.perf_counter() - t0, evaluation, schedule)


def plot_learning_curve(out: Path, evaluation: Evaluation) -> Path | None:
    """``learning_curve.png``: each training episode's return, a running mean, and the held-out
    gains of every evaluated method as reference lines."""
    rows = [r for r in read_rows(out / "scores.jsonl") if r.get("return") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows.sort(key=lambda r: r["episode"])
    x = [r["episode"] for r in rows]
    y = [r["return"] for r in rows]
    k = max(1, len(y) // 8)
    running = [statistics.mean(y[max(0, i - k + 1) : i + 1]) for i in range(len(y))]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.scatter(x, y, s=10, alpha=0.5, label="training episode return (task drawn from the training range)")
    ax.plot(x, running, lw=2, label=f"running mean over {k}")
    for i, (label, stats) in enumerate(evaluation.summary().items()):
        ax.axhline(stats["gain"][0], ls="--", lw=1.2, color=f"C{i + 2}",
                   label=f"{label}: mean gain on held-out tasks {stats['gain'][0]:+.3f}")
    ax.set_xlabel("episode")
    ax.set_ylabel("final composite - base composite")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = out / "learning_curve.png"
    tmp = out / ".learning_curve.png.tmp"
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["Evaluation", "TrainResult", "evaluate", "format_table", "make_venv", "train_controller"]
