"""The run dir being inspected: read and checked before any weights load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metactl.commands.train_controller.search_start import load_run_config, searched_prior
from metactl.errors import ConfigError
from metactl.policies import policy_class
from metactl.policies.config import ControllerConfig
from metactl.rundir import CONFIG, CONTROLLER, SCHEDULE, SCORES, SEARCH_DIR, is_train_controller_dir
from metactl.schedule import Schedule


@dataclass
class RunDir:
    """A finished ``metactl train-controller`` run."""

    path: Path
    config: ControllerConfig
    schedule: Schedule  # the greedy schedule the run saved (on its schedule_task_seed)
    controller: Path | None  # controller.zip for SB3 policies (ppo, bandit); None for searches and fixed schedules

    @property
    def policy(self) -> str:
        return self.config.policy

    @property
    def closed_loop(self) -> bool:
        return self.controller is not None

    @property
    def prior(self) -> str:
        """What the policy's zero action runs, in words: a run that searched first acts around the
        schedule its search kept, not around the ``env.prior`` its config names."""
        if Path(self.config.env.prior) == searched_prior(self.path):
            return f"the schedule its search stage kept, {SEARCH_DIR}/{SCHEDULE}"
        return f"env.prior {self.config.env.prior!r}"


def load_run_dir(path: str | Path) -> RunDir:
    """Read ``path`` as a train-controller run; a clear :class:`ConfigError` if it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"RUN_DIR {str(p)!r} is not a directory; give the --out of a `metactl train-controller` run.")
    if not (p / CONFIG).is_file():
        raise ConfigError(
            f"RUN_DIR {p}: no {CONFIG}, so it is not a train-controller run dir "
            f"(make one with `metactl train-controller --out {p}`)."
        )
    if not is_train_controller_dir(p):
        raise ConfigError(
            f"RUN_DIR {p}: {CONFIG} has no `policy:`, so it is not a train-controller run (a run-schedule or "
            "transfer dir has no controller to inspect); give the --out of `metactl train-controller`."
        )
    config = load_run_config(p)
    finish = f"`metactl train-controller --resume {p}` completes it"
    missing = [f for f in (SCHEDULE, SCORES) if not (p / f).is_file()]
    if missing:
        raise ConfigError(f"RUN_DIR {p}: no {missing[0]} (did the run finish? {finish}).")
    controller = None
    if policy_class(config.policy).uses_ppo:
        controller = p / CONTROLLER
        if not controller.is_file():
            raise ConfigError(f"RUN_DIR {p}: policy {config.policy!r} but no {CONTROLLER} ({finish}).")
    return RunDir(p, config, Schedule.load(p / SCHEDULE), controller)
