"""``metactl sweep``'s config: the sweep YAML, and every trial's controller config built from it
(and checked) before Ray starts."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metactl.commands.train_controller.config import check as check_controller
from metactl.config import YamlConfig, load_dataclass_config
from metactl.envs.config import RayConfig
from metactl.errors import ConfigError, check_number, did_you_mean
from metactl.paths import resolve_config_path
from metactl.policies.config import ControllerConfig, load_controller_config
from metactl.rundir import SWEEP

# What a sweep can rank by: the gain over base, or a reported score part (per-behaviour parts are
# named after the suite's behaviours, so they are checked by form).
METRICS = ("gain", "composite", "stability", "kl", "cka")
_BEHAVIOUR_PART = re.compile(r"(target|heldout)/\w+")


def check_metric(metric: str) -> None:
    if metric not in METRICS and not _BEHAVIOUR_PART.fullmatch(str(metric)):
        raise ConfigError(
            f"metric: unknown value {metric!r}; allowed: {', '.join(METRICS)}, or a score part target/<behaviour> "
            f"or heldout/<behaviour> (e.g. heldout/style).{did_you_mean(str(metric), METRICS)}"
        )


DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
TRIAL_FILE = "trial.json"

@dataclass
class SearchConfig:
    space: dict[str, dict] = field(
        default_factory=dict,
        metadata={
            "help": "controller option -> distribution, e.g. ppo.learning_rate: {loguniform: [1e-4, 3e-3]}; "
            "one of uniform, loguniform, randint ([low, high)), choice ([a, b, ...])"
        },
    )
    num_samples: int = field(default=8, metadata={"help": "settings Optuna proposes (each runs search.repeats trials)"})
    repeats: int = field(
        default=1, metadata={"help": "controller seeds per proposed setting (seed, seed+1, ...); TPE sees their mean"}
    )
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
    base: str = field(
        default="default",
        metadata={"help": "controller config every trial starts from: a built-in name (configs/train/) or a YAML path"},
    )
    set: list[str] = field(
        default_factory=list, metadata={"help": "overrides for every trial, e.g. [total_episodes=32, n_envs=2]"}
    )
    grid: dict[str, list] = field(
        default_factory=dict,
        metadata={
            "help": "controller option -> values, e.g. {seed: [0, 1, 2]}; every combination is a trial "
            "(leave empty with search.space)"
        },
    )
    search: SearchConfig = field(
        default_factory=SearchConfig,
        metadata={"help": "Optuna TPE over controller options (used when search.space is set)"},
    )
    metric: str = field(
        default="gain",
        metadata={"help": "what the best setting maximises (kl: minimises): gain over base, or a score part"},
    )
    task_seeds: list[int] = field(
        default_factory=lambda: [2000, 2001, 2002, 2003, 2004],
        metadata={
            "help": "held-out tasks every trial is scored on "
            "(validation: keep them apart from train-controller's eval_task_seeds)"
        },
    )
    max_concurrent: int = field(
        default=0, metadata={"help": "trials at once (0: as many as the cluster's resources fit)"}
    )
    trial_cpus: float = field(
        default=0.0,
        metadata={
            "help": "CPUs reserved for a trial's own process (PPO learner) beside its envs; it mostly waits on them"
        },
    )
    ray: RayConfig = field(
        default_factory=RayConfig,
        metadata={"help": "where the sweep runs: ray.address (null: a local instance), ray.num_cpus"},
    )

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
            raise ConfigError(
                "grid and search.space are both empty: give grid values (e.g. grid: {seed: [0, 1, 2]}) "
                "or a search.space."
            )
        fixed = [k for k in [*self.grid, *self.search.space] if k in ("n_envs", "vec_env") or k.startswith("ray.")]
        if fixed:
            raise ConfigError(
                f"{'grid' if fixed[0] in self.grid else 'search.space'}.{fixed[0]}: "
                "a sweep reserves the same resources for every trial, so n_envs, vec_env and ray.* cannot vary; "
                "set them for all trials with set: [...]."
            )
        check_metric(self.metric)
        if not isinstance(self.task_seeds, list) or not self.task_seeds:
            raise ConfigError(f"task_seeds: expected a non-empty list of task seeds, got {self.task_seeds!r}.")
        self.task_seeds = [
            int(check_number(f"task_seeds[{i}]", s, low=0, integer=True)) for i, s in enumerate(self.task_seeds)
        ]
        self.max_concurrent = int(
            check_number("max_concurrent", self.max_concurrent, low=0, high=100_000, integer=True)
        )
        self.trial_cpus = check_number("trial_cpus", self.trial_cpus, low=0.0, high=1024.0)

    @property
    def mode(self) -> str:
        return "search" if self.search.space else "grid"

    def base_path(self) -> Path:
        return resolve_config_path("train", self.base).resolve()


def require_tune() -> None:
    """Fail with the install command when the optional ``tune`` extra is missing."""
    import importlib.util

    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.tune") is None:
        raise ConfigError("metactl sweep needs Ray Tune, which is not installed; pip install 'metactl[tune]'.")
    try:
        import ray.tune  # noqa: F401 - ray without the tune extra lacks its dependencies (pandas, pyarrow)
    except ImportError as exc:
        raise ConfigError(
            f"metactl sweep needs Ray Tune, which does not import ({exc}); pip install 'metactl[tune]'."
        ) from exc


def parse_distribution(where: str, dist: Any) -> tuple[str, list]:
    """``{kind: args}`` -> (kind, args), checked; the message shows the accepted forms."""
    forms = "{uniform: [low, high]}, {loguniform: [low, high]}, {randint: [low, high]} or {choice: [a, b, ...]}"
    if not isinstance(dist, dict) or len(dist) != 1:
        raise ConfigError(f"{where}: expected one of {forms}; got {dist!r}.")
    ((kind, args),) = dist.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(
            f"{where}: unknown distribution {kind!r}; "
            f"allowed: {', '.join(DISTRIBUTIONS)}.{did_you_mean(kind, DISTRIBUTIONS)}"
        )
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}.{kind}: expected a list, e.g. {forms}; got {args!r}.")
    if kind != "choice":
        if len(args) != 2:
            raise ConfigError(f"{where}.{kind}: expected [low, high], got {args!r}.")
        low = check_number(
            f"{where}.{kind}[0]",
            args[0],
            low=0.0 if kind == "loguniform" else None,
            low_open=kind == "loguniform",
            integer=kind == "randint",
        )
        high = check_number(f"{where}.{kind}[1]", args[1], integer=kind == "randint")
        if high <= low:
            raise ConfigError(f"{where}.{kind}: got [{args[0]}, {args[1]}]; high must be above low.")
        args = [low, high]
    return kind, args


def load_sweep_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """YAML file (optional) + ``a.b=value`` overrides -> validated :class:`SweepConfig`; every trial's
    controller config is then built once (no weights) so a bad option fails here, not in trial 7."""
    cfg = load_dataclass_config(SweepConfig, path, overrides)
    trials = [trial_config(cfg, trial) for trial in preview_trials(cfg)]
    for ccfg in trials:
        check_controller(ccfg)
    check_trial_resources(trials[0])
    return cfg


def preview_trials(cfg: SweepConfig) -> list[dict]:
    """The settings trials will run with: every grid combination, or each search key at its bounds."""
    if cfg.mode == "grid":
        keys = list(cfg.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(cfg.grid[k] for k in keys))]
    out = []
    for key, dist in cfg.search.space.items():
        kind, args = parse_distribution(key, dist)
        for value in args if kind == "choice" else [args[0], args[1] - 1 if kind == "randint" else args[1]]:
            out.append({key: value})
    return out


def trial_config(cfg: SweepConfig, params: dict) -> ControllerConfig:
    """The controller config of the trial with ``params`` (its grid values or Optuna's proposal)."""
    params = dict(params)
    index = params.pop("__trial_index__", None)
    overrides = [
        *cfg.set,
        *(f"{k}={_yaml_value(v)}" for k, v in params.items()),
        f"eval_task_seeds={cfg.task_seeds}",
        "compare=[]",
        # Held-out task families judge a controller; a sweep that scored trials on them would tune on them.
        "eval_suites=[]",
    ]
    base = load_controller_config(cfg.base_path(), overrides)
    if index is not None:  # Repeater: the same proposal under seed, seed+1, ...
        overrides.append(f"seed={base.seed + int(index)}")
        base = load_controller_config(cfg.base_path(), overrides)
    return base


def _yaml_value(value: Any) -> str:
    return (
        json.dumps(value)
        if isinstance(value, (list, dict, str))
        else repr(value)
        if isinstance(value, float)
        else str(value)
    )


def check_trial_resources(ccfg: ControllerConfig) -> None:
    """The resource rule :func:`trial_resources` relies on, checked on a trial's config without Ray."""
    if ccfg.vec_env != "ray" and ccfg.run.training.device != "cpu":
        raise ConfigError(
            f"run.training.device={ccfg.run.training.device} in a sweep needs vec_env: ray with ray.gpus_per_env, "
            "so that every trial reserves the GPU share its envs use (set: [vec_env=ray, ray.gpus_per_env=0.25, ...])."
        )


def resolve(
    config: str | Path = "seeds",
    overrides: list[str] | None = None,
    resume: Path | None = None,
    out: Path | None = None,
    ray_address: str | None = None,
) -> tuple[SweepConfig, Path]:
    """A new sweep's config (a built-in name from configs/sweep/ or a YAML path, then overrides) and
    its directory, or, with ``resume``, the config that directory holds."""
    cluster = [f"ray.address={ray_address}"] if ray_address is not None else []
    if resume is not None:
        if not (resume / SWEEP).is_file():
            raise ConfigError(f"--resume {resume}: no {SWEEP} there; it is not a sweep dir.")
        # The cluster may differ from the one the sweep started on; everything else is the sweep's.
        return load_sweep_config(resume / SWEEP, cluster), resume
    path = resolve_config_path("sweep", config)
    return load_sweep_config(path, [*(overrides or []), *cluster]), out or Path("runs") / f"sweep-{path.stem}"
