"""``metactl transfer``'s config and plan: resolved from the source run, the target's preset and
the command line, and checked (names, schedules, tools, observation layout, the target's layer
map) before any weights load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metactl.commands.transfer.source import MODES, Source, load_source
from metactl.config import RunConfig, YamlConfig, build_config, merge_overrides, read_config_file
from metactl.envs import PHASE_ENV_ID
from metactl.envs.observe import layout_hint, observation_labels
from metactl.errors import ConfigError, check_choice, check_number
from metactl.layer_map import preflight_layer_map
from metactl.models import resolve_model
from metactl.paths import builtin_config
from metactl.runner import check_schedule, suite_tools
from metactl.schedule import Schedule
from metactl.tasks import TaskSuite, load_suite

LEARNED = "learned"
GUARDS = ("off", "phase", "hold")  # transfer --guard: none, per phase, or held for the rest of the episode


@dataclass
class TransferConfig(YamlConfig):
    source: str = field(
        default="", metadata={"help": "train-controller run dir (schedule.yaml, controller.zip), or a schedule YAML"}
    )
    mode: str = field(
        default="schedule",
        metadata={"help": "schedule: replay the greedy schedule.yaml (open loop); policy: the controller picks "
                          "each phase from the target run's observations (closed loop)"},
    )
    task_seeds: list[int] = field(
        default_factory=lambda: [1000, 1001, 1002],
        metadata={"help": "task seeds every method runs on (keep them outside the controller's training range)"},
    )
    compare: list[str] = field(
        default_factory=lambda: ["default"],
        metadata={"help": "schedules run beside the learned one at the same budget ('default' is always included)"},
    )
    merge: bool = field(
        default=False, metadata={"help": "also save the learned side's model with its adapters merged, under merged/"}
    )
    envelope: bool = field(
        default=False,
        metadata={"help": "policy mode: clip each of the controller's actions into the range it took in that phase "
                          "on its training tasks (the source run's envelope.json), so readings unlike any it trained "
                          "on cannot push it past what it ever did there"},
    )
    guard: str = field(
        default="off",
        metadata={"help": "policy mode: 'phase' runs the controller's mean action on its training tasks (the source "
                          "run's guard.json) in each phase whose reading lies farther from every training reading "
                          "than those lie from each other; 'hold' keeps to the mean actions for the rest of the "
                          "episode from the first such phase; 'off' acts closed loop everywhere"},
    )
    run: RunConfig = field(
        default_factory=RunConfig, metadata={"help": "the target: model, suite, steps, tools, reward"}
    )

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if not isinstance(self.task_seeds, list) or not self.task_seeds:
            raise ConfigError(f"task_seeds: expected a non-empty list of task seeds, got {self.task_seeds!r}.")
        self.task_seeds = [
            int(check_number(f"task_seeds[{i}]", s, low=0, integer=True)) for i, s in enumerate(self.task_seeds)
        ]
        if not isinstance(self.compare, list):
            raise ConfigError(f"compare: expected a list of schedule names, got {self.compare!r}.")
        self.compare = ["default", *[c for c in self.compare if c != "default"]]
        for name in self.compare:
            Schedule.named(name)  # read and checked now, not after the training budget
        if not isinstance(self.merge, bool):
            raise ConfigError(f"merge: expected true or false, got {self.merge!r}.")
        if not isinstance(self.envelope, bool):
            raise ConfigError(f"envelope: expected true or false, got {self.envelope!r}.")
        if self.envelope and self.mode != "policy":
            raise ConfigError(
                f"envelope: clips a closed-loop controller's actions, but mode is {self.mode!r} (a replayed schedule "
                "takes no actions); pass --mode policy, or drop --envelope."
            )
        check_choice("guard", self.guard, GUARDS)
        if self.guard != "off" and self.mode != "policy":
            raise ConfigError(
                f"guard: {self.guard!r} guards a closed-loop controller's actions, but mode is {self.mode!r} (a "
                "replayed schedule takes no actions); pass --mode policy, or drop --guard."
            )
        if self.guard != "off" and self.envelope:
            raise ConfigError(
                f"guard: {self.guard!r} with envelope: true; a guarded controller acts as trained or on its mean "
                "action, an enveloped one clipped into its range: pick one (drop --envelope or --guard)."
            )


def preset_path(model: str) -> Path | None:
    """``configs/transfer/<model>.yaml`` when metactl ships settings for that target."""
    return builtin_config("transfer", model)


def _deep_merge(into: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def resolve_transfer_config(source: Source, model: str, preset: Path | None, overrides: list[str]) -> TransferConfig:
    """The source run's settings, then the preset (``configs/transfer/<model>.yaml`` by default),
    then ``a.b=value`` overrides; the target model replaces the proxy."""
    # Resolved, so rerunning from another directory (or with ./ spelled differently) still resumes.
    data: dict = {"source": str(source.path.resolve()), "run": source.run.to_dict()}
    data["run"]["model"] = model
    if preset is not None:
        _deep_merge(data, read_config_file(preset))
    merge_overrides(data, overrides)
    data["run"]["model"] = model
    cfg = build_config(TransferConfig, data, "")
    cfg.run.task_seed = cfg.task_seeds[0]  # the engine loads this task first; no task is loaded twice
    return cfg


@dataclass
class Plan:
    """Everything a transfer runs, resolved and checked."""

    config: TransferConfig
    source: Source
    schedules: dict[str, Schedule]  # label -> schedule (the learned one absent in policy mode)
    layers: str = ""  # the target's depth-group / module-kind mapping, when known before loading
    preset: Path | None = None  # the settings file the target's config came from


def plan_from_cli(run_dir: Path, model: str, mode: str, *, suite: str | None = None, steps: int | None = None,
                  task_seeds: list[int] | None = None, compare: list[str] | None = None, merge: bool = False,
                  envelope: bool = False, guard: str = "off", config: Path | None = None,
                  overrides: list[str] | None = None) -> Plan:
    """The command line's options -> a checked :class:`Plan` (no weights load)."""
    if steps is not None and steps < 1:
        raise ConfigError(
            f"--steps: got {steps}; every method needs at least 1 optimiser step (allowed range [1, 10000000])."
        )
    options = [f"mode={mode}"]
    for key, value in (("run.suite", suite), ("run.training.total_steps", steps)):
        if value is not None:
            options.append(f"{key}={value}")
    if task_seeds:
        options.append(f"task_seeds={list(task_seeds)}")
    if compare:
        options.append(f"compare={['default', *compare]}")
    if merge:
        options.append("merge=true")
    if envelope:
        options.append("envelope=true")
    if guard != "off":
        options.append(f"guard={guard}")
    source = load_source(run_dir, mode)
    preset = config or preset_path(model)
    cfg = resolve_transfer_config(source, model, preset, [*options, *(overrides or [])])
    plan = plan_transfer(cfg, source)
    plan.preset = preset
    return plan


def plan_transfer(cfg: TransferConfig, source: Source) -> Plan:
    """Check names, schedules, tools and the target's layer map without reading weights."""
    resolve_model(cfg.run.model)
    suite = load_suite(cfg.run.suite, cfg.task_seeds[0])
    groups = cfg.run.training.layer_groups
    tools = suite_tools(cfg.run, suite)
    schedules: dict[str, Schedule] = {}
    if cfg.mode == "schedule":
        schedules[LEARNED] = source.schedule.regroup(groups)
    for name in cfg.compare:
        schedules[name] = Schedule.named(name, groups)
    for label, sched in schedules.items():
        check_schedule(cfg.run, sched, tools, what=f"{label} schedule")
    if cfg.mode == "policy":
        labels, width = _check_observations(cfg, source, suite, tools)
        if cfg.envelope:
            _check_envelope(source, labels, width)
        if cfg.guard != "off":
            _check_guard(source, labels, width)
    layer_map = preflight_layer_map(cfg.run.model, groups)
    return Plan(cfg, source, schedules, layer_map.describe() if layer_map else "")


def _source_file(source: Source, flag: str, name: str, nothing: str, entry: str) -> Path:
    """The source run's file ``name`` that ``flag`` (a per-phase wrapper of the closed loop) reads,
    once the source is known to act per phase and to hold it."""
    if source.env_id != PHASE_ENV_ID:
        raise ConfigError(
            f"{flag}: the source's policy {source.policy!r} acts once per episode (the bandit env), so there are no "
            f"per-phase {nothing}; {flag} needs a ppo controller, or drop it."
        )
    path = source.path / name
    if not path.is_file():
        raise ConfigError(
            f"{flag}: source {source.path} has no {name} (train-controller writes it when compare lists averaged, as "
            f"the default does); widen the run's evaluation with compare=[averaged,{entry}] "
            f"(scripts/controller_report.py reads the run back and adds it), or drop {flag}."
        )
    return path


def _check_envelope(source: Source, labels: list[str], width: int) -> None:
    """The source run's envelope exists, parses, has one range per phase the controller acts in and
    one entry per action component, and the controller's observation has the clock it is read by."""
    from metactl.policies.envelope import ActionEnvelope, phase_reader
    from metactl.rundir import ENVELOPE

    path = _source_file(source, "--envelope", ENVELOPE, "actions to keep in range", "enveloped")
    envelope = ActionEnvelope.load(path)
    if envelope.phases != source.env.phases or len(envelope.low[0]) != width:
        raise ConfigError(
            f"--envelope: {path} holds {envelope.phases} phases of {len(envelope.low[0])} action entries; the "
            f"controller acts in {source.env.phases} phases (env.phases) of {width}: it belongs to another run."
        )
    phase_reader(labels, envelope.phases)  # refuses an observation without a clock, before any weights load


def _check_guard(source: Source, labels: list[str], width: int) -> None:
    """The source run's guard exists, parses, was taken on this observation layout, phase count and
    action width, and the observation has the clock it is read by."""
    from metactl.policies.envelope import phase_reader
    from metactl.policies.guard import ObservationGuard
    from metactl.rundir import GUARD

    path = _source_file(source, "--guard", GUARD, "readings to guard", "guarded")
    guard = ObservationGuard.load(path)
    if guard.phases != source.env.phases or len(guard.fallback[0]) != width or list(guard.labels) != labels:
        raise ConfigError(
            f"--guard: {path} holds {guard.phases} phases of {len(guard.labels)} readings and {len(guard.fallback[0])} "
            f"action entries; the controller reads {len(labels)} and acts in {source.env.phases} phases "
            f"(env.phases) of {width}: it belongs to another run."
        )
    phase_reader(labels, guard.phases)  # refuses an observation without a clock, before any weights load


def _check_observations(
    cfg: TransferConfig, source: Source, suite: TaskSuite, tools: list[str]
) -> tuple[list[str], int]:
    """A closed-loop controller reads a vector: every entry must mean the same on the target. Returns
    the observation's labels and the width of one phase's action (what an envelope must match)."""
    src_groups = source.run.training.layer_groups
    if cfg.run.training.layer_groups != src_groups:
        raise ConfigError(
            f"run.training.layer_groups={cfg.run.training.layer_groups}, but the controller acts on {src_groups} "
            "groups; --mode policy needs the same grouping (drop the override, or use --mode schedule, which "
            "regroups)."
        )
    src_suite = load_suite(source.run.suite, cfg.task_seeds[0])
    src_tools = suite_tools(source.run, src_suite)
    progress = source.env_id == PHASE_ENV_ID
    phases = source.env.phases
    hide = source.env.hide
    want = observation_labels(src_suite, src_tools, src_groups, phases, progress, hide)
    got = observation_labels(suite, tools, src_groups, phases, progress, hide)
    if want != got:
        diff = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        a = want[diff] if diff < len(want) else "(end)"
        b = got[diff] if diff < len(got) else "(end)"
        raise ConfigError(
            f"--mode policy: the controller was trained on observations of suite {source.run.suite!r} "
            f"({len(want)} entries); suite {cfg.run.suite!r} gives {len(got)}, differing at entry {diff} "
            f"({a!r} vs {b!r}). The controller needs a suite with {layout_hint(want)}, and {phases} phases; "
            "or use --mode schedule, which replays the learned schedule on any suite."
        )
    return want, source.env.phase_controls(tuple(src_tools), src_groups).dim
