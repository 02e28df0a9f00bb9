"""The run dir being inspected: read and checked before any weights load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metactl.controller_config import ControllerConfig
from metactl.errors import ConfigError
from metactl.schedule import Schedule

SCORES = "scores.jsonl"
EVAL = "eval.jsonl"


@dataclass
class RunDir:
    """A finished ``metactl train-controller`` run."""

    path: Path
    config: ControllerConfig
    schedule: Schedule  # the greedy schedule the run saved (first held-out task)
    controller: Path | None  # controller.zip for SB3 policies (ppo, bandit); None for searches and fixed schedules

    @property
    def policy(self) -> str:
        return self.config.policy

    @property
    def closed_loop(self) -> bool:
        return self.controller is not None


def load_run_dir(path: str | Path) -> RunDir:
    """Read ``path`` as a train-controller run; a clear :class:`ConfigError` if it is not one."""
    from metactl.controller_config import load_controller_config
    from policies import POLICIES
    from policies.sb3 import CONTROLLER_FILE

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"RUN_DIR {str(p)!r} is not a directory; give the --out of a `metactl train-controller` run.")
    cfg_path = p / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(
            f"RUN_DIR {p}: no config.yaml, so it is not a train-controller run dir "
            f"(make one with `metactl train-controller --out {p}`)."
        )
    import yaml

    data = yaml.safe_load(cfg_path.read_text()) or {}
    if not isinstance(data, dict) or "policy" not in data:
        raise ConfigError(
            f"RUN_DIR {p}: config.yaml has no `policy:`, so it is not a train-controller run "
            "(a run-schedule or transfer dir has no controller to inspect); give the --out of `metactl train-controller`."
        )
    config = load_controller_config(cfg_path)
    missing = [f for f in ("schedule.yaml", SCORES) if not (p / f).is_file()]
    if missing:
        raise ConfigError(f"RUN_DIR {p}: no {missing[0]} (did the run finish? `metactl train-controller --resume {p}` completes it).")
    controller = None
    if POLICIES[config.policy].uses_ppo:
        controller = p / CONTROLLER_FILE
        if not controller.is_file():
            raise ConfigError(f"RUN_DIR {p}: policy {config.policy!r} but no {CONTROLLER_FILE} (`metactl train-controller --resume {p}` completes it).")
    return RunDir(p, config, Schedule.load(p / "schedule.yaml"), controller)
