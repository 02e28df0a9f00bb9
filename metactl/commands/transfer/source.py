"""What a transfer carries: read from a train-controller run dir, a run-schedule dir or a schedule
YAML, without loading weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metactl.commands.train_controller.search_start import load_run_config
from metactl.config import RunConfig, load_config
from metactl.envs.config import EnvConfig
from metactl.errors import ConfigError, check_choice
from metactl.policies import POLICIES
from metactl.rundir import CONFIG, CONTROLLER, SCHEDULE, is_train_controller_dir
from metactl.schedule import Schedule

MODES = ("schedule", "policy")


@dataclass
class Source:
    """What a transfer carries: a schedule (open loop) and/or a trained SB3 controller (closed loop)."""

    path: Path
    run: RunConfig  # the proxy run the decisions were learned on
    schedule: Schedule | None = None
    controller: Path | None = None
    policy: str = ""  # the train-controller policy name ("" for a bare schedule)
    env: EnvConfig | None = None  # what an episode was for the controller (phases, probes, prior)

    @property
    def env_id(self) -> str:
        """The env the controller acted in (closed loop)."""
        return POLICIES[self.policy].env_id


def load_source(path: str | Path, mode: str) -> Source:
    """Read a train-controller run dir (or a run-schedule dir, or a schedule YAML); no weights load."""
    check_choice("mode", mode, MODES)
    p = Path(path)
    if p.is_file():
        if mode == "policy":
            raise ConfigError(
                f"source {p}: a schedule file carries no controller; --mode policy needs a train-controller "
                f"run dir with {CONTROLLER}."
            )
        return Source(p, RunConfig(), schedule=Schedule.load(p))
    if not p.is_dir():
        raise ConfigError(
            f"source {str(p)!r} does not exist; give a train-controller run dir "
            "(metactl train-controller --out DIR) or a schedule YAML."
        )
    cfg_path = p / CONFIG
    if not cfg_path.is_file():
        raise ConfigError(
            f"source {p}: no {CONFIG}, so it is not a train-controller run dir; train one with "
            f"`metactl train-controller --out {p}`, or pass a schedule YAML."
        )
    if is_train_controller_dir(p):
        cfg = load_run_config(p)
        source = Source(p, cfg.run, policy=cfg.policy, env=cfg.env)
    else:  # a run-schedule dir: a schedule and the run config it ran with
        source = Source(p, load_config(cfg_path))
    finish = f" (did the run finish? `metactl train-controller --resume {p}` completes it)"
    if mode == "schedule":
        sched = p / SCHEDULE
        if not sched.is_file():
            raise ConfigError(f"source {p}: no {SCHEDULE} to transfer{finish if source.policy else ''}.")
        source.schedule = Schedule.load(sched)
        return source
    if not source.policy:
        raise ConfigError(
            f"source {p}: a run-schedule dir has no controller; --mode policy needs a train-controller run dir."
        )
    if not POLICIES[source.policy].uses_ppo:
        raise ConfigError(
            f"source {p}: its policy {source.policy!r} is not an SB3 controller (only ppo and bandit are); "
            "use --mode schedule to carry its schedule."
        )
    source.controller = p / CONTROLLER
    if not source.controller.is_file():
        raise ConfigError(f"source {p}: no {CONTROLLER}{finish}.")
    return source
