"""``metactl sweep``: many ``train-controller`` runs as Ray Tune trials, on one machine or a cluster.

Two kinds of sweep, both over the same trial (one :func:`metactl.trainer.train_controller` run,
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
tasks nor the 1000-1004 that train-controller's final table reports), so picking the best trial
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
import itertools
import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.config import RayConfig
from metactl.config import YamlConfig, build_config, merge_overrides, read_config_file
from metactl.errors import ConfigError, check_choice, check_number, did_you_mean
from metactl.evaluation import PARTS
from metactl.paths import CONFIGS

METRICS = ("gain", *PARTS)
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
TRIAL_FILE = "trial.json"


@dataclass
class SearchConfig:
    space: dict[str, dict] = field(
        default_factory=dict,
        metadata={"help": "controller option -> distribution, e.g. ppo.learning_rate: {loguniform: [1e-4, 3e-3]}; one of uniform, loguniform, randint ([low, high)), choice ([a, b, ...])"},
    )
    num_samples: int = field(default=8, metadata={"help": "settings Optuna proposes (each runs search.repeats trials)"})
    repeats: int = field(default=1, metadata={"help": "controller seeds per proposed setting (seed, seed+1, ...); TPE sees their mean"})
    seed: int = field(default=0, metadata={"help": "seed of the TPE sampler"})

    def __post_init__(self) -> None:
        if not isinstance(self.space, dict):
            raise ConfigError(f"search.space: expected a mapping of option -> distribution, got {self.space!r}.")
        for key, dist in self.space.items():
            parse_distribution(f"search.space.{key}", dist)
        self.num_samples = int(check_number("search.num_samples", self.num_samples, low=1, high=100_000, integer=True))
        self.repeats = int(check_number("search.repeats", self.repeats, low=1, high=1000, integer=True))
        self.seed = int(check_number("search.seed", self.seed, low=0, integer=True))


@dataclass
class SweepConfig(YamlConfig):
    base: str = field(default="configs/train/default.yaml", metadata={"help": "controller config every trial starts from (a train-controller YAML)"})
    set: list[str] = field(default_factory=list, metadata={"help": "overrides for every trial, e.g. [total_episodes=32, n_envs=1]"})
    grid: dict[str, list] = field(
        default_factory=dict,
        metadata={"help": "controller option -> values, e.g. {seed: [0, 1, 2]}; every combination is a trial (leave empty with search.space)"},
    )
    search: SearchConfig = field(default_factory=SearchConfig, metadata={"help": "Optuna TPE over controller options (used when search.space is set)"})
    metric: str = field(default="gain", metadata={"help": "what the best setting maximises (kl: minimises): gain over base, or a score part"})
    task_seeds: list[int] = field(
        default_factory=lambda: [2000, 2001, 2002, 2003, 2004],
        metadata={"help": "held-out tasks every trial is scored on (validation: keep them apart from train-controller's eval_task_seeds)"},
    )
    max_concurrent: int = field(default=0, metadata={"help": "trials at once (0: as many as the cluster's resources fit)"})
    trial_cpus: float = field(
        default=0.0, metadata={"help": "CPUs reserved for a trial's own process (PPO learner) beside its envs; it mostly waits on them"}
    )
    ray: RayConfig = field(default_factory=RayConfig, metadata={"help": "where the sweep runs: ray.address (null: a local instance), ray.num_cpus"})

    def __post_init__(self) -> None:
        if not isinstance(self.set, list) or not all(isinstance(s, str) for s in self.set):
            raise ConfigError(f"set: expected a list of KEY=VALUE strings, got {self.set!r}.")
        if not isinstance(self.grid, dict) or not all(isinstance(v, list) and v for v in self.grid.values()):
            raise ConfigError(f"grid: expected a mapping of option -> non-empty list of values, got {self.grid!r}.")
        if self.grid and self.search.space:
            raise ConfigError(
                "grid and search.space are both set: Optuna proposes every setting itself and cannot take a grid "
                f"({', '.join(self.grid)}). Use search.repeats for seeds, or set grid: {{}}."
            )
        if not self.grid and not self.search.space:
            raise ConfigError("grid and search.space are both empty: give grid values (e.g. grid: {seed: [0, 1, 2]}) or a search.space.")
        fixed = [k for k in [*self.grid, *self.search.space] if k in ("n_envs", "vec_env") or k.startswith("ray.")]
        if fixed:
            raise ConfigError(
                f"{'grid' if fixed[0] in self.grid else 'search.space'}.{fixed[0]}: a sweep reserves the same resources for "
                "every trial, so n_envs, vec_env and ray.* cannot vary; set them for all trials with set: [...]."
            )
        check_choice("metric", self.metric, METRICS)
        if not isinstance(self.task_seeds, list) or not self.task_seeds:
            raise ConfigError(f"task_seeds: expected a non-empty list of task seeds, got {self.task_seeds!r}.")
        self.task_seeds = [int(check_number(f"task_seeds[{i}]", s, low=0, integer=True)) for i, s in enumerate(self.task_seeds)]
        self.max_concurrent = int(check_number("max_concurrent", self.max_concurrent, low=0, high=100_000, integer=True))
        self.trial_cpus = check_number("trial_cpus", self.trial_cpus, low=0.0, high=1024.0)

    @property
    def mode(self) -> str:
        return "search" if self.search.space else "grid"

    def base_path(self) -> Path:
        path = Path(self.base)
        if not path.is_file() and (CONFIGS.parent / path).is_file():  # the repo-relative default, from any cwd
            path = CONFIGS.parent / path
        if not path.is_file():
            raise ConfigError(f"base: controller config {self.base!r} does not exist.")
        return path.resolve()


def require_tune() -> None:
    """Fail with the install command when the optional ``tune`` extra is missing."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        raise ConfigError("metactl sweep needs Ray Tune, which is not installed; pip install 'metactl[tune]'.")
    try:
        import ray.tune  # noqa: F401 - ray without the tune extra lacks its dependencies (pandas, pyarrow)
    except ImportError as exc:
        raise ConfigError(f"metactl sweep needs Ray Tune, which does not import ({exc}); pip install 'metactl[tune]'.") from exc


def parse_distribution(where: str, dist: Any) -> tuple[str, list]:
    """``{kind: args}`` -> (kind, args), checked; the message shows the accepted forms."""
    forms = "{uniform: [low, high]}, {loguniform: [low, high]}, {randint: [low, high]} or {choice: [a, b, ...]}"
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(f"{where}: expected one of {forms}; got {dist!r}.")
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}.{did_you_mean(kind, DISTRIBUTIONS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}.{kind}: expected a list, e.g. {forms}; got {args!r}.")
    if kind != "choice":
        if len(args) != 2:
            raise ConfigError(f"{where}.{kind}: expected [low, high], got {args!r}.")
        low = check_number(f"{where}.{kind}[0]", args[0], low=0.0 if kind == "loguniform" else None, low_open=kind == "loguniform",
                           integer=kind == "randint")
        high = check_number(f"{where}.{kind}[1]", args[1], integer=kind == "randint")
        if high <= low:
            raise ConfigError(f"{where}.{kind}: got [{args[0]}, {args[1]}]; high must be above low.")
        args = [low, high]
    return kind, args


def load_sweep_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """YAML file (optional) + ``a.b=value`` overrides -> validated :class:`SweepConfig`; every trial's
    controller config is then built once (no weights) so a bad option fails here, not in trial 7."""
    data = read_config_file(path) if path is not None else {}
    merge_overrides(data, overrides or [])
    cfg = build_config(SweepConfig, data, "")
    trials = [trial_config(cfg, trial) for trial in preview_trials(cfg)]
    check_trial_resources(trials[0])
    return cfg


# -- trials ------------------------------------------------------------------------------------------
def preview_trials(cfg: SweepConfig) -> list[dict]:
    """The settings trials will run with: every grid combination, or each search key at its bounds."""
    if cfg.mode == "grid":
        keys = list(cfg.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(cfg.grid[k] for k in keys))]
    out = []
    for key, dist in cfg.search.space.items():
        kind, args = parse_distribution(key, dist)
        for value in (args if kind == "choice" else [args[0], args[1] - 1 if kind == "randint" else args[1]]):
            out.append({key: value})
    return out


def trial_config(cfg: SweepConfig, params: dict):
    """The controller config of the trial with ``params`` (its grid values or Optuna's proposal)."""
    from metactl.controller_config import load_controller_config

    params = dict(params)
    index = params.pop("__trial_index__", None)
    overrides = [*cfg.set, *(f"{k}={_yaml_value(v)}" for k, v in params.items()),
                 f"eval_task_seeds={cfg.task_seeds}", "compare=[]"]
    base = load_controller_config(cfg.base_path(), overrides)
    if index is not None:  # Repeater: the same proposal under seed, seed+1, ...
        overrides.append(f"seed={base.seed + int(index)}")
        base = load_controller_config(cfg.base_path(), overrides)
    return base


def _yaml_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, str)) else repr(value) if isinstance(value, float) else str(value)


def trial_name(params: dict) -> str:
    """A readable, stable directory name for a trial's settings (same settings, same directory)."""
    items = sorted(params.items())
    text = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
    digest = hashlib.sha1(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "=.,-_" else "_" for c in text)[:80]
    return f"{safe}-{digest}"


def score_trial(evaluation, policy: str) -> dict[str, float]:
    """Mean over the trial's tasks of every part and of the gain over base."""
    stats = evaluation.summary()[policy]
    return {k: float(stats[k][0]) for k in METRICS}


def run_trial(params: dict, sweep: dict, out: str) -> None:
    """One Tune trial: a train-controller run on the trial's settings, reported to Tune.

    Idempotent: a trial whose run finished reports its stored scores at once; an interrupted one
    resumes its own run dir.
    """
    from ray import tune

    from metactl.io import atomic_write_text
    from metactl.trainer import train_controller

    cfg = build_config(SweepConfig, sweep, "")
    ccfg = trial_config(cfg, params)
    run_dir = Path(out) / "trials" / trial_name(params)
    done = run_dir / TRIAL_FILE
    if done.is_file():
        tune.report(json.loads(done.read_text())["metrics"])
        return
    t0 = time.perf_counter()
    result = train_controller(ccfg, run_dir, resume=(run_dir / "config.yaml").is_file(), progress=False)
    metrics = {**score_trial(result.evaluation, ccfg.policy), "episodes": result.episodes,
               "seconds": time.perf_counter() - t0, "controller_seed": ccfg.seed}
    atomic_write_text(done, json.dumps({"params": params, "metrics": metrics, "policy": ccfg.policy}, sort_keys=True))
    tune.report(metrics)


def check_trial_resources(ccfg) -> None:
    """The resource rule :func:`trial_resources` relies on, checked on a trial's config without Ray."""
    if ccfg.vec_env != "ray" and ccfg.run.training.device != "cpu":
        raise ConfigError(
            f"run.training.device={ccfg.run.training.device} in a sweep needs vec_env: ray with ray.gpus_per_env, so that "
            "every trial reserves the GPU share its envs use (set: [vec_env=ray, ray.gpus_per_env=0.25, ...])."
        )


def trial_resources(cfg: SweepConfig):
    """What one trial reserves: its env actors' bundles (vec_env: ray), or its env processes."""
    from ray import tune

    ccfg = trial_config(cfg, preview_trials(cfg)[0])
    check_trial_resources(ccfg)
    head = {"CPU": cfg.trial_cpus} if cfg.trial_cpus > 0 else {}
    if ccfg.vec_env == "ray":
        env = {"CPU": ccfg.ray.cpus_per_env, **({"GPU": ccfg.ray.gpus_per_env} if ccfg.ray.gpus_per_env else {})}
        env = {k: v for k, v in env.items() if v > 0}
        return tune.PlacementGroupFactory([head, *[env] * ccfg.n_envs], strategy="PACK")
    procs = ccfg.n_envs if ccfg.n_envs > 1 and ccfg.vec_env != "dummy" else 1
    return tune.PlacementGroupFactory([{"CPU": cfg.trial_cpus + procs}])


# -- the sweep ---------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    out: Path
    rows: list[dict]
    table: list[list[str]]
    seconds: float
    errors: int


def run_sweep(cfg: SweepConfig, out: str | Path, resume: bool = False, progress: bool = True) -> SweepResult:
    """Run (or resume) the sweep into ``out`` on Ray Tune; returns every finished trial and the table."""
    from metactl.io import atomic_write_text, claim_run_dir

    out = Path(out).resolve()
    claim_run_dir(out, resume, "sweep.yaml", "sweep")
    if not resume:
        atomic_write_text(out / "sweep.yaml", cfg.to_commented_yaml())
    # Set before Ray starts, so the local raylet's workers inherit them: trials keep this cwd (run
    # dirs are absolute anyway), Tune prints through the plain reporter, no usage stats go out.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from envs.ray_vec_env import init_ray

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
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    table = summary_table(rows, cfg.metric)
    atomic_write_text(out / "summary.md", _summary_text(cfg, rows, table, time.perf_counter() - t0))
    return SweepResult(out, rows, table, time.perf_counter() - t0, errors)


def _fit(cfg: SweepConfig, out: Path, progress: bool):
    import logging

    from ray import tune

    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=cfg.to_dict(), out=str(out)), trial_resources(cfg))
    storage = out / "tune"
    name = "sweep"
    total = len(preview_trials(cfg)) if cfg.mode == "grid" else cfg.search.num_samples * cfg.search.repeats
    callbacks = [_trial_bar(total, cfg.metric, done=len(collect(out)))] if progress else []
    if (storage / name).is_dir() and tune.Tuner.can_restore(str(storage / name)):
        tuner = tune.Tuner.restore(str(storage / name), trainable=trainable, resume_errored=True)
        return tuner.fit()
    mode = "min" if cfg.metric in {"kl"} else "max"
    # Tune's own reporter prints a status table every few seconds; one progress bar says enough.
    run_config = tune.RunConfig(name=name, storage_path=str(storage), verbose=0, callbacks=callbacks,
                                failure_config=tune.FailureConfig(max_failures=1))
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
        tune_config = tune.TuneConfig(metric=cfg.metric, mode=mode, search_alg=searcher,
                                      num_samples=cfg.search.num_samples * cfg.search.repeats)
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
                better = self.best is None or (value < self.best if self.metric == "kl" else value > self.best)
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


def collect(out: Path) -> list[dict]:
    """Every finished trial under ``out/trials`` (the sweep's record, whatever Tune kept)."""
    rows = []
    for path in sorted((out / "trials").glob(f"*/{TRIAL_FILE}")):
        data = json.loads(path.read_text())
        params = {k: v for k, v in data["params"].items() if k != "__trial_index__"}
        rows.append({"trial": path.parent.name, "params": params, "seed": data["metrics"].get("controller_seed"),
                     "policy": data.get("policy"), "metrics": data["metrics"]})
    return rows


def summary_table(rows: list[dict], metric: str) -> list[list[str]]:
    """One row per setting (seeds pooled): mean ± std over its trials of every part, best first."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["params"].items()) if k != "seed") or "(all)"
        groups.setdefault(key, []).append(r)
    sign = 1.0 if metric != "kl" else -1.0
    order = sorted(groups, key=lambda k: -sign * statistics.mean(r["metrics"][metric] for r in groups[k]))
    cols = ["composite", "target/style", "target/truth", "heldout/style", "heldout/truth", "kl"]
    table = [["setting", "trials", "seeds", "gain over base", *cols]]
    for key in order:
        trials = groups[key]
        seeds = sorted({r["seed"] for r in trials if r["seed"] is not None})
        table.append([key, str(len(trials)), ",".join(map(str, seeds)),
                      _cell([r["metrics"]["gain"] for r in trials], signed=True),
                      *[_cell([r["metrics"][c] for r in trials]) for c in cols]])
    return table


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _cell(values: list[float], signed: bool = False) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.3f} ± {sd:.3f}"


def _summary_text(cfg: SweepConfig, rows: list[dict], table: list[list[str]], seconds: float) -> str:
    head = "| " + " | ".join(table[0]) + " |\n" + "|---" * len(table[0]) + "|\n"
    body = "".join("| " + " | ".join(r) + " |\n" for r in table[1:])
    what = (f"grid over {', '.join(cfg.grid)}" if cfg.mode == "grid"
            else f"Optuna TPE over {', '.join(cfg.search.space)}, {cfg.search.num_samples} settings x {cfg.search.repeats} seeds")
    return (f"# Sweep: {what}\n\n{len(rows)} finished trials, scored on task seeds {cfg.task_seeds} "
            f"(mean ± std over each setting's trials; best by {cfg.metric} first). This run: {seconds:.0f} s.\n\n" + head + body)


__all__ = ["SweepConfig", "SweepResult", "load_sweep_config", "run_sweep", "summary_table", "trial_config", "trial_name"]
