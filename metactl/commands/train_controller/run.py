"""``train-controller``'s run: spend an episode budget on a policy, checkpoint, resume, evaluate.

Run directory::

    config.yaml        resolved ControllerConfig (a resumed run reads it back)
    scores.jsonl       one row per (episode, phase): seeds, controls, losses, scores, reward
    checkpoints/       ckpt-<episodes>/ after every update: policy state + progress + env RNGs (+ the running
                       weight mean under ppo.weight_average)
    controller.zip     the trained SB3 model (ppo, bandit; under ppo.weight_average its last updates' mean);
                       search.json for the searches (plain JSON)
    schedule.yaml      the policy's greedy schedule on schedule_task_seed (a task nothing is scored on)
    averaged.yaml      a closed-loop policy's phase controls on training tasks averaged into one fixed schedule
    envelope.json      per phase, the range of that policy's actions on those tasks ('enveloped' acts inside it)
    guard.json         that policy's observations and actions on those tasks ('guarded' falls back to their mean
                       action where an observation lies farther from them than they lie from each other)
    eval.jsonl         one row per (method, suite, held-out task, episode seed): final and base scores
    adapters/          that run's adapters, peft format
    learning_curve.png each training episode's return beside the held-out gains
    tb/                TensorBoard: episode returns and parts; PPO's own losses under tb/<policy>
    search/            under ppo.search_episodes: the search stage, a `random` run dir of its own (its
                       schedule.yaml is PPO's prior; commands/train_controller/search_start.py)

``scores.jsonl`` is cut back to the checkpoint's episode count on resume, so rows are neither
duplicated nor missing.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from stable_baselines3.common.vec_env import VecEnv

from metactl.commands.train_controller.checkpoints import restore, save_checkpoint
from metactl.commands.train_controller.episode_log import EpisodeLog, cut_rows
from metactl.commands.train_controller.report import plot_learning_curve
from metactl.commands.train_controller.search_start import (
    acting_config,
    load_run_config,
    search_config,
    searched_prior,
    searches_first,
)
from metactl.envs.config import EnvConfig
from metactl.envs.jobs import Job
from metactl.envs.vector import finished, run_jobs
from metactl.envs.vector import make_venv as _make_venv
from metactl.errors import ConfigError
from metactl.evaluation import Evaluation
from metactl.policies import make_policy
from metactl.policies.config import (
    AVERAGED,
    CLOSED_LOOP_WRAPPERS,
    ENVELOPED,
    GUARDED,
    GUARDED_HOLD,
    MADE_FROM_POLICY,
    ControllerConfig,
)
from metactl.policies.envelope import ActionEnvelope, EnvelopedActor
from metactl.policies.guard import GuardedActor, ObservationGuard
from metactl.rundir import (
    ADAPTERS,
    AVERAGED_SCHEDULE,
    BASE_MODEL,
    CONFIG,
    ENVELOPE,
    EVAL,
    GUARD,
    SCHEDULE,
    SCORES,
    SEARCH_DIR,
    append_jsonl,
    atomic_write_text,
    claim_output,
    holding,
    read_jsonl,
)
from metactl.schedule import Schedule

log = logging.getLogger("metactl.train_controller")


def make_venv(cfg: ControllerConfig, env_id: str, n_envs: int | None = None, env: EnvConfig | None = None) -> VecEnv:
    """``n_envs`` copies of the env under ``cfg.vec_env`` (population engines, subprocesses, Ray actors or
    in-process); ``env``: env settings other than ``cfg.env`` (a policy's own, :meth:`Policy.env_config`)."""
    kind = cfg.resolved_vec_env(env_id)
    n_envs = n_envs or cfg.resolved_n_envs(kind)
    return _make_venv(env_id, cfg.run, env or cfg.env, n_envs, kind, cfg.ray, cfg.processes())


def _job(
    label: str, actor: object, task_seed: int, seed: int, save: str | None = None, suite: str | None = None
) -> Job:
    if isinstance(actor, Schedule):
        return Job(task_seed, seed, schedule=actor, label=label, save_adapters=save, suite=suite)
    # Pickled up front with the plain pickler: torch's multiprocessing pickler refuses parameters
    # that require grad, and the worker only needs a copy.
    return Job(task_seed, seed, actor=pickle.dumps(actor), label=label, save_adapters=save, suite=suite)


def evaluate(
    cfg: ControllerConfig, venv: VecEnv, actors: dict[str, object], adapters: Path | None = None
) -> tuple[Evaluation, dict | None]:
    """Each actor (Schedule or SB3-style policy) on every held-out task seed of run.suite and of
    every suite of ``cfg.eval_suites``, on the same ``cfg.eval_episodes`` episode seeds.

    With ``adapters``, the first actor also runs on ``cfg.schedule_task_seed`` (a task no score is
    reported on), and that run's adapters are saved there; its result comes back second.
    """
    seed = cfg.run.training.seed
    jobs = [
        _job(label, actor, ts, e, suite=suite)
        for suite, ts, e in evaluation_pairs(cfg)
        for label, actor in actors.items()
    ]
    if adapters is not None:
        label, actor = next(iter(actors.items()))
        jobs.append(_job(label, actor, cfg.schedule_task_seed, seed, save=str(adapters)))
    rows = run_jobs(venv, jobs)
    if adapters is None:
        return Evaluation(rows), None
    return Evaluation(rows[:-1]), finished(rows[-1:], f"{label}'s schedule.yaml and adapters")[0]


def evaluation_pairs(cfg: ControllerConfig) -> list[tuple[str | None, int, int]]:
    """Every (suite, task seed, episode seed) the held-out table is measured on, in evaluation order;
    suite None is the run's own (``run.suite``)."""
    seed = cfg.run.training.seed
    return [
        (suite, ts, seed + e)
        for suite in [None, *cfg.eval_suites]
        for ts in cfg.eval_task_seeds
        for e in range(cfg.eval_episodes)
    ]


def evaluate_missing(cfg: ControllerConfig, out: Path) -> int:
    """Widen a finished run's evaluation to ``cfg``'s pairs without retraining: the saved policy, its
    ``averaged.yaml`` and the fixed comparisons already in ``out/eval.jsonl`` run on the (suite, task,
    episode seed) pairs the file lacks, and their rows are appended. Returns the rows added.
    ``enveloped`` and ``guarded`` in ``cfg.compare`` add those actors for a closed-loop run that lacks
    them; a run without ``envelope.json`` or ``guard.json`` gets it by rolling its policy out again on
    the training tasks ``averaged`` was made from (greedy acting, so the same actions as the run's own
    rollouts on the same settings).

    Only evaluation settings may differ from the run's own config (what trained the policy is read
    from ``out/config.yaml``); the policy acts greedily, so a row is what a fresh run's evaluation
    would have written for that pair."""

    rows = read_jsonl(out / EVAL)
    run_cfg = load_run_config(out)
    have = {(r["label"], r.get("suite"), r["task_seed"], r.get("episode_seed", 0)) for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if run_cfg.policy == "ppo":
        labels += [w for w in CLOSED_LOOP_WRAPPERS if w in cfg.compare and w not in labels]
    wanted = [(suite, ts, e) for suite, ts, e in evaluation_pairs(cfg)]
    missing = [(lab, p) for p in wanted for lab in labels
               if (lab, p[0] or run_cfg.run.suite, p[1], p[2]) not in have]
    if not missing:
        return 0
    policy = make_policy(run_cfg)
    venv = make_venv(run_cfg, policy.env_id, env=policy.env_config(run_cfg.env))
    try:
        policy.setup(venv, None)
        policy.load(out, venv)
        actors: dict[str, object] = {run_cfg.policy: policy.actor(), **comparison_actors(run_cfg)}
        if (out / AVERAGED_SCHEDULE).is_file():
            actors[AVERAGED] = Schedule.load(out / AVERAGED_SCHEDULE)
        needed = {lab for lab, _ in missing} & set(CLOSED_LOOP_WRAPPERS)
        if needed:
            envelope, guard = stored_summaries(run_cfg, out, venv, actors[run_cfg.policy])
            actors.update(closed_loop_wrappers(needed, actors[run_cfg.policy], envelope, guard, venv))
        unknown = sorted({lab for lab, _ in missing} - set(actors))
        if unknown:
            raise ConfigError(f"{out / EVAL}: rows labelled {unknown} cannot be re-run from the run dir "
                              f"(it can act as {sorted(actors)})")
        jobs = [_job(lab, actors[lab], ts, e, suite=suite) for lab, (suite, ts, e) in missing]
        added = run_jobs(venv, jobs)
    finally:
        policy.close()
        venv.close()
    for row in added:
        append_jsonl(out / EVAL, eval_row(row))
    return len(added)


def comparison_actors(cfg: ControllerConfig) -> dict[str, Schedule]:
    groups = cfg.run.training.layer_groups
    return {name: Schedule.named(name, groups) for name in cfg.compare if name not in MADE_FROM_POLICY}


AVERAGED_TASKS = 8  # training tasks the closed-loop policy is rolled out on to average it


class TrainingSummaries(NamedTuple):
    """A closed-loop policy's greedy rollouts on training tasks, summarised three ways."""

    averaged: Schedule
    envelope: ActionEnvelope | None
    guard: ObservationGuard | None


def training_summaries(cfg: ControllerConfig, venv: VecEnv, actor: object) -> TrainingSummaries:
    """The closed-loop ``actor``'s greedy rollouts on the first training tasks, summarised: its phase
    controls averaged phase by phase in control space (so learning-rate multipliers average
    geometrically: the open-loop schedule closest to what it does on average; if it matches the policy,
    closed-loop control did not matter), the per-phase range of its raw actions, and its observations
    with those actions (the last two None where the env records none: the bandit env acts once per
    episode)."""
    import numpy as np

    from metactl.envs.spaces import PhaseControlSpace

    lo, hi = cfg.env.train_task_seeds
    jobs = [_job(AVERAGED, actor, ts, cfg.run.training.seed) for ts in range(lo, min(hi, lo + AVERAGED_TASKS))]
    # A training task the policy blows up on is left out of all three (its phases never all ran).
    rows = finished(run_jobs(venv, jobs), "the averaged schedule")
    schedules: list[Schedule] = [row["schedule"] for row in rows]
    tools = tuple(schedules[0].tool_names)
    # Merge decisions average too: the codes +-0.5 make the mean a majority vote over the tasks.
    space = PhaseControlSpace(tools, schedules[0].layer_groups, train_range=cfg.env.train_range,
                              merge=cfg.env.merge_tools(list(tools)))
    phases = []
    for i, first in enumerate(schedules[0].phases):
        mean = np.mean([space.encode(s.phases[i]) for s in schedules], axis=0)
        phases.append(space.phase(mean, first.fraction))
    name = f"{cfg.policy} averaged over {len(schedules)} training tasks"
    averaged = Schedule(phases, schedules[0].layer_groups, name=name)
    per_phase = [row.get("actions") for row in rows]
    envelope = ActionEnvelope.from_actions(per_phase) if all(per_phase) else None
    seen = [row.get("observations") for row in rows]
    guard = None
    if envelope is not None and all(seen) and len(rows) >= 2:
        labels = venv.get_attr("observation_labels", indices=[0])[0]
        guard = ObservationGuard(seen, per_phase, labels)
    return TrainingSummaries(averaged, envelope, guard)


def stored_summaries(cfg: ControllerConfig, out: Path, venv: VecEnv,
                     actor: object) -> tuple[ActionEnvelope | None, ObservationGuard | None]:
    """The run's ``envelope.json`` and ``guard.json``; where one is missing (a run from before it
    existed), both are taken again from the policy's greedy rollouts on the training tasks, and the
    missing file is written."""
    files = (out / ENVELOPE, out / GUARD)
    if not all(f.is_file() for f in files):
        for path, summary in zip(files, training_summaries(cfg, venv, actor)[1:]):
            if summary is not None and not path.is_file():
                summary.save(path)
    return (ActionEnvelope.load(files[0]) if files[0].is_file() else None,
            ObservationGuard.load(files[1]) if files[1].is_file() else None)


def closed_loop_wrappers(names: set[str] | list[str], actor: object, envelope: ActionEnvelope | None,
                         guard: ObservationGuard | None, venv: VecEnv) -> dict[str, object]:
    """The entries of ``names`` that wrap the closed-loop ``actor`` (``enveloped``, ``guarded``,
    ``guarded-hold``), for those whose summary exists; each reads the phase from ``venv``'s
    observation clock."""
    labels = venv.get_attr("observation_labels", indices=[0])[0]
    wrappers: dict[str, object] = {}
    if ENVELOPED in names and envelope is not None:
        wrappers[ENVELOPED] = EnvelopedActor(actor, envelope, labels)
    for name, hold in ((GUARDED, False), (GUARDED_HOLD, True)):
        if name in names and guard is not None:
            wrappers[name] = GuardedActor(actor, guard, labels, hold=hold)
    return wrappers


def eval_row(row: dict) -> dict:
    """An evaluation row as eval.jsonl keeps it: the schedule is in the run dir's YAML files and the
    observations (a guard's input) would multiply the file's size."""
    return {k: v for k, v in row.items() if k not in ("schedule", "observations")}


@dataclass
class TrainResult:
    out: Path
    episodes: int
    seconds: float
    evaluation: Evaluation
    schedule: Schedule
    searched: int = 0  # of ``episodes``, those the search stage ran before PPO (ppo.search_episodes)


def train_controller(cfg: ControllerConfig, out: Path, resume: bool = False, progress: bool = True,
                     overwrite: bool = False) -> TrainResult:
    """Train (or resume) ``cfg.policy`` into ``out``, then evaluate it on the held-out tasks.
    ``overwrite`` replaces a train-controller run already in ``out`` (:func:`metactl.rundir.claim_output`);
    another process writing ``out`` at the same time is refused (:func:`metactl.rundir.holding`)."""
    out = Path(out)
    policy = make_policy(cfg)  # an unknown policy fails here, before the run dir is touched
    with holding(out, "train-controller"):
        if not searches_first(cfg):
            return _train_controller(cfg, policy, out, resume, progress, overwrite)
        # The search stage is a run of its own in RUN/search, resumed like any run; PPO's stage then
        # starts (or resumes) in RUN with the schedule the search kept as its prior.
        claim_output(out, "train-controller", resume=resume, overwrite=overwrite)
        if not resume:
            atomic_write_text(out / CONFIG, cfg.to_commented_yaml())
        t0 = time.perf_counter()
        search = out / SEARCH_DIR
        scfg = search_config(cfg)
        if not searched_prior(out).is_file():
            _train_controller(scfg, make_policy(scfg), search, (search / CONFIG).is_file(), progress, False,
                              evaluate_after=False)
        stage = acting_config(cfg, out)
        done = _train_controller(stage, make_policy(stage), out, True, progress, False)
        return replace(done, episodes=done.episodes + scfg.total_episodes, seconds=time.perf_counter() - t0,
                       searched=scfg.total_episodes)


def _train_controller(cfg: ControllerConfig, policy, out: Path, resume: bool, progress: bool,
                      overwrite: bool, evaluate_after: bool = True) -> TrainResult:
    """``evaluate_after=False``: train and keep the policy and its schedule (an open-loop policy's
    own), nothing evaluated (the search stage of ``ppo.search_episodes``)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    claim_output(out, "train-controller", resume=resume, overwrite=overwrite)
    if not resume:
        atomic_write_text(out / CONFIG, cfg.to_commented_yaml())
    torch.set_num_threads(cfg.run.training.threads)
    t0 = time.perf_counter()
    writer = SummaryWriter(str(out / "tb"))
    try:
        venv = make_venv(cfg, policy.env_id, env=policy.env_config(cfg.env))
    except BaseException:
        writer.close()
        raise
    try:
        policy.setup(venv, out / "tb")
        ckpt = restore(out, policy, venv) if resume else None
        done = ckpt.episodes if ckpt else 0
        updates = ckpt.updates if ckpt else 0
        cut_rows(out / SCORES, done)
        total = policy.episodes
        if ckpt:
            log.info("resuming %s after %d of %d episodes", out, done, total)
        with tqdm(
            total=total,
            initial=done,
            desc=f"train-controller [{cfg.policy}]",
            unit="episode",
            disable=not progress or total == 0,
        ) as bar:
            episode_log = EpisodeLog(out / SCORES, done, writer, bar)
            while episode_log.episodes < total:
                policy.learn(venv, episode_log)
                updates += 1
                if updates % cfg.checkpoint_every == 0 or episode_log.episodes >= total:
                    save_checkpoint(out, policy, venv, episode_log.episodes, updates)
        policy.finish()
        policy.save(out)
        if not evaluate_after:
            schedule = policy.actor()
            if not isinstance(schedule, Schedule):
                raise TypeError(f"policy {cfg.policy!r} acts closed loop; only an open-loop search skips evaluation")
            schedule.name = f"{cfg.policy} best of {episode_log.episodes} episodes"
            schedule.save(out / SCHEDULE)
            return TrainResult(out, episode_log.episodes, time.perf_counter() - t0, Evaluation([]), schedule)
        actors = {cfg.policy: policy.actor(), **comparison_actors(cfg)}
        envelope = guard = None
        if set(MADE_FROM_POLICY) & set(cfg.compare) and not isinstance(actors[cfg.policy], Schedule):
            averaged, envelope, guard = training_summaries(cfg, venv, actors[cfg.policy])
            if AVERAGED in cfg.compare:
                actors[AVERAGED] = averaged
            actors.update(closed_loop_wrappers(cfg.compare, actors[cfg.policy], envelope, guard, venv))
        evaluation, kept = evaluate(cfg, venv, actors, adapters=out / ADAPTERS)
    finally:
        policy.close()
        venv.close()
        writer.close()
    for row in evaluation.rows:
        append_jsonl(out / EVAL, eval_row(row))
    schedule: Schedule = kept["schedule"]
    schedule.name = f"{cfg.policy} greedy schedule on task seed {kept['task_seed']}"
    schedule.save(out / SCHEDULE)
    if AVERAGED in actors:  # what the policy does on average, as a schedule a user can replay or transfer
        actors[AVERAGED].save(out / AVERAGED_SCHEDULE)
    if envelope is not None:  # the closed loop's range on training tasks, for 'enveloped' acting later
        envelope.save(out / ENVELOPE)
    if guard is not None:  # and what it read there, for 'guarded' acting later
        guard.save(out / GUARD)
    atomic_write_text(out / BASE_MODEL, kept["model_path"] + "\n")
    plot_learning_curve(out, evaluation.of_suite(cfg.run.suite))
    return TrainResult(out, episode_log.episodes, time.perf_counter() - t0, evaluation, schedule)
