"""``metactl sweep``'s run: many ``train-controller`` runs as Ray Tune trials, on one machine or a cluster.

Two kinds of sweep, both over the same trial (one :func:`metactl.commands.train_controller.run.train_controller` run,
scored on held-out tasks):

- **grid**: every combination of ``grid`` values (``tune.grid_search``), e.g. controller seeds, or
  bench_controller's policies x seeds;
- **search**: Optuna TPE (``OptunaSearch`` behind a ``ConcurrencyLimiter``) proposes values for the
  keys of ``search.space``; ``search.repeats`` runs each proposal under that many controller
  seeds (Tune's ``Repeater``), and TPE sees their mean.

Each trial reserves its envs with a ``PlacementGroupFactory``: with ``vec_env: ray`` one bundle per
env actor (they may land on other nodes; Tune places the trial's own child actors in its group),
otherwise one bundle holding the trial and its env subprocesses.

Trials are scored on ``task_seeds`` (validation tasks, by default 2000-2004: neither training
tasks nor the 1000-1002 that train-controller's final table reports), so picking the best trial
does not tune on the tasks the result is then reported on.

Output directory::

    sweep.yaml        the resolved sweep config (a rerun with --resume reads it back)
    trials/<name>/    each trial's train-controller run dir (resumable on its own), trial.json when done
    tune/             Ray Tune's experiment state (Tuner.restore resumes an interrupted sweep)
    results.jsonl     one row per finished trial: its settings, seed and scores
    summary.md        mean ± std over seeds of every part, per setting; the best setting first
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metactl.commands.sweep.config import (
    TRIAL_FILE,
    SweepConfig,
    check_trial_resources,
    parse_distribution,
    preview_trials,
    trial_config,
)
from metactl.commands.sweep.report import collect, summary_table, summary_text
from metactl.commands.train_controller.run import train_controller
from metactl.config import build_config
from metactl.evaluation import Evaluation
from metactl.rundir import CONFIG, RESULTS, SWEEP, atomic_write_text, claim_output, holding, write_jsonl
from metactl.score_parts import is_better, sign

SUMMARY = "summary.md"


def trial_name(params: dict) -> str:
    """A readable, stable directory name for a trial's settings (same settings, same directory)."""
    items = sorted(params.items())
    text = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
    digest = hashlib.sha1(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "=.,-_" else "_" for c in text)[:80]
    return f"{safe}-{digest}"


def score_trial(evaluation: Evaluation, policy: str) -> dict[str, float]:
    """Mean over the trial's tasks of every part and of the gain over base."""
    stats = evaluation.summary()[policy]
    return {k: float(v[0]) for k, v in stats.items() if isinstance(v, tuple)}


def run_trial(params: dict, sweep: dict, out: str) -> None:
    """One Tune trial: a train-controller run on the trial's settings, reported to Tune.

    Idempotent: a trial whose run finished reports its stored scores at once; an interrupted one
    resumes its own run dir.
    """
    from ray import tune

    cfg = build_config(SweepConfig, sweep, "")
    ccfg = trial_config(cfg, params)
    run_dir = Path(out) / "trials" / trial_name(params)
    done = run_dir / TRIAL_FILE
    if done.is_file():
        tune.report(json.loads(done.read_text())["metrics"])
        return
    t0 = time.perf_counter()
    result = train_controller(ccfg, run_dir, resume=(run_dir / CONFIG).is_file(), progress=False)
    metrics = {**score_trial(result.evaluation, ccfg.policy), "episodes": result.episodes,
               "seconds": time.perf_counter() - t0, "controller_seed": ccfg.seed}
    atomic_write_text(done, json.dumps({"params": params, "metrics": metrics, "policy": ccfg.policy}, sort_keys=True))
    tune.report(metrics)

def trial_resources(cfg: SweepConfig) -> Any:
    """What one trial reserves: its env actors' bundles (vec_env: ray), or its env processes."""
    from ray import tune

    ccfg = trial_config(cfg, preview_trials(cfg)[0])
    check_trial_resources(ccfg)
    head = {"CPU": cfg.trial_cpus} if cfg.trial_cpus > 0 else {}
    kind, n_envs = ccfg.resolved_vec_env(), ccfg.resolved_n_envs()
    if kind == "ray":
        env = {"CPU": ccfg.ray.cpus_per_env, **({"GPU": ccfg.ray.gpus_per_env} if ccfg.ray.gpus_per_env else {})}
        env = {k: v for k, v in env.items() if v > 0}
        return tune.PlacementGroupFactory([head, *[env] * n_envs], strategy="PACK")
    procs = ccfg.processes() if kind == "batched" else n_envs if n_envs > 1 and kind != "dummy" else 1
    return tune.PlacementGroupFactory([{"CPU": cfg.trial_cpus + procs}])

@dataclass
class SweepResult:
    out: Path
    rows: list[dict]
    table: list[list[str]]
    seconds: float
    errors: int


def run_sweep(cfg: SweepConfig, out: str | Path, resume: bool = False, progress: bool = True,
              overwrite: bool = False) -> SweepResult:
    """Run (or resume) the sweep into ``out`` on Ray Tune; returns every finished trial and the table."""
    out = Path(out).resolve()
    with holding(out, "sweep"):
        return _sweep_into(cfg, out, resume, progress, overwrite)


def _sweep_into(cfg: SweepConfig, out: Path, resume: bool, progress: bool, overwrite: bool) -> SweepResult:
    claim_output(out, "sweep", resume=resume, overwrite=overwrite)
    if not resume:
        atomic_write_text(out / SWEEP, cfg.to_commented_yaml())
    # Set before Ray starts, so the local raylet's workers inherit them: trials keep this cwd (run
    # dirs are absolute anyway), Tune prints through the plain reporter, no usage stats go out.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from metactl.envs.ray_vec_env import init_ray

    owns = init_ray(cfg.ray)
    t0 = time.perf_counter()
    try:
        grid = _fit(cfg, out, progress)
        errors = grid.num_errors
    finally:
        if owns:
            import ray

            ray.shutdown()
    rows = collect(out)
    write_jsonl(out / RESULTS, rows)
    table = summary_table(rows, cfg.metric)
    atomic_write_text(out / SUMMARY, summary_text(cfg, rows, table, time.perf_counter() - t0))
    return SweepResult(out, rows, table, time.perf_counter() - t0, errors)


def _fit(cfg: SweepConfig, out: Path, progress: bool):
    import logging

    from ray import tune

    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, sweep=cfg.to_dict(), out=str(out)), trial_resources(cfg)
    )
    storage = out / "tune"
    name = "sweep"
    total = len(preview_trials(cfg)) if cfg.mode == "grid" else cfg.search.num_samples * cfg.search.repeats
    callbacks = [_trial_bar(total, cfg.metric, done=len(collect(out)))] if progress else []
    if (storage / name).is_dir() and tune.Tuner.can_restore(str(storage / name)):
        tuner = tune.Tuner.restore(str(storage / name), trainable=trainable, resume_errored=True)
        return tuner.fit()
    mode = "min" if sign(cfg.metric) < 0 else "max"
    # Tune's own reporter prints a status table every few seconds; one progress bar says enough.
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(storage),
        verbose=0,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=1),
    )
    if cfg.mode == "grid":
        space = {k: tune.grid_search(v) for k, v in cfg.grid.items()}
        tune_config = tune.TuneConfig(metric=cfg.metric, mode=mode, max_concurrent_trials=cfg.max_concurrent or None)
    else:
        from ray.tune.search import ConcurrencyLimiter, Repeater
        from ray.tune.search.optuna import OptunaSearch

        space = {k: _tune_distribution(*parse_distribution(k, d)) for k, d in cfg.search.space.items()}
        searcher = OptunaSearch(metric=cfg.metric, mode=mode, seed=cfg.search.seed)
        if cfg.search.repeats > 1:
            searcher = Repeater(searcher, repeat=cfg.search.repeats, set_index=True)
        # The limit counts trials, so a setting's repeats can run side by side.
        searcher = ConcurrencyLimiter(searcher, max_concurrent=cfg.max_concurrent or max(2, cfg.search.repeats))
        tune_config = tune.TuneConfig(
            metric=cfg.metric, mode=mode, search_alg=searcher, num_samples=cfg.search.num_samples * cfg.search.repeats
        )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config).fit()


def _trial_bar(total: int, metric: str, done: int = 0):
    """A Tune callback: a tqdm bar over the sweep's trials, with the best score so far (defined here
    because ray is an optional import)."""
    from ray.tune import Callback

    class TrialBar(Callback):
        """A tqdm bar over the sweep's trials, with the best score so far."""

        def __init__(self, total: int, metric: str, done: int = 0) -> None:
            from tqdm.auto import tqdm

            self.metric = metric
            self.best: float | None = None
            self.bar = tqdm(total=total, initial=min(done, total), desc="sweep", unit="trial")

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            value = (trial.last_result or {}).get(self.metric)
            if value is not None:
                better = self.best is None or is_better(self.metric, value, self.best)
                self.best = value if better else self.best
                self.bar.set_postfix({f"best {self.metric}": f"{self.best:+.3f}"})
            self.bar.update(1)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"trial {trial.trial_id} failed")

        def on_experiment_end(self, trials, **info) -> None:
            self.bar.close()

    return TrialBar(total, metric, done)


def _tune_distribution(kind: str, args: list):
    from ray import tune

    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    if kind == "randint":
        return tune.randint(*args)
    return tune.choice(args)
