"""``train-controller``'s config: the command line -> a checked :class:`ControllerConfig` and run dir.

Every name and number is checked here, before any weights load or anything is written.
"""

from __future__ import annotations

from pathlib import Path

from metactl.commands.train_controller.search_start import load_run_config
from metactl.errors import ConfigError
from metactl.models import resolve_model
from metactl.paths import resolve_config_path
from metactl.policies import policy_class
from metactl.policies.config import ControllerConfig, load_controller_config
from metactl.rundir import CONFIG
from metactl.tasks import load_suite


def default_out(cfg: ControllerConfig) -> Path:
    return Path("runs") / f"controller-{cfg.policy}-s{cfg.seed}"


def resolve(config: str | Path = "default", overrides: list[str] | None = None, resume: Path | None = None,
            out: Path | None = None) -> tuple[ControllerConfig, Path]:
    """A new run's config (a built-in name or a YAML path, then ``a.b=value`` overrides) and its
    run dir, or, with ``resume``, the config that run dir holds."""
    if resume is not None:
        if not (resume / CONFIG).is_file():
            raise ConfigError(f"--resume {resume}: no {CONFIG} there; it is not a train-controller run dir.")
        cfg, out = load_run_config(resume, acting=False), resume
    else:
        cfg = load_controller_config(resolve_config_path("train", config), overrides)
        out = out or default_out(cfg)
    check(cfg)
    return cfg, out


def check(cfg: ControllerConfig) -> None:
    """What a config alone cannot know: that its policy and model exist and its suite reads (a user
    suite's files are all parsed here, not in the env workers after the run dir was written)."""
    policy_class(cfg.policy)
    resolve_model(cfg.run.model)
    load_suite(cfg.run.suite, cfg.run.task_seed)
