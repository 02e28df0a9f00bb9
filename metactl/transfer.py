"""``metactl transfer``: carry a controller's decisions from the proxy to another model.

Adapters cannot move between models of different widths; decisions can. A schedule speaks in
relative depth groups, module kinds and budget fractions (:mod:`metactl.schedule`), and the
runner maps those onto any decoder whose blocks sit in one ``nn.ModuleList``
(:func:`metactl.adapters.resolve_layer_map`: Llama, GPT-2, Qwen, ...). Two modes:

- ``schedule`` (open loop): the controller's greedy ``schedule.yaml`` replayed on the target.
- ``policy`` (closed loop): the SB3 controller acts in the target's own environment, choosing
  each phase from the target run's scores, adapter norms and interference readings, encoded by
  the same :class:`envs.observe.Observer` it was trained on.

Every transfer also runs ``default`` (and any other ``compare`` schedule) at the same step budget
on the same tasks and seeds, through the same runner, so the table shows what the transfer bought.

Output directory::

    config.yaml     the resolved transfer config (source, mode, tasks, the target's run config)
    results.jsonl   one row per (method, task seed), appended as each finishes; a rerun resumes
    schedule.yaml   what the learned side ran on the first task (policy mode: what it chose)
    adapters/<tool> the learned side's adapters on the first task, peft format
    merged/         with ``merge``: the base with those adapters merged (``save_pretrained``)
    comparison.txt  the side-by-side table the command prints
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from metactl.config import RunConfig, YamlConfig, build_config, merge_overrides, read_config_file
from metactl.errors import ConfigError, check_choice, check_number
from metactl.evaluation import Evaluation
from metactl.paths import CONFIGS, resolve_schedule_path
from metactl.schedule import Schedule

if TYPE_CHECKING:
    from envs.config import EnvConfig

MODES = ("schedule", "policy")
LEARNED = "learned"
RESULTS = "results.jsonl"


@dataclass
class TransferConfig(YamlConfig):
    source: str = field(default="", metadata={"help": "train-controller run dir (schedule.yaml, controller.zip), or a schedule YAML"})
    mode: str = field(
        default="schedule",
        metadata={"help": "schedule: replay the greedy schedule.yaml (open loop); policy: the controller picks each phase from the target run's observations (closed loop)"},
    )
    task_seeds: list[int] = field(
        default_factory=lambda: [1000, 1001, 1002],
        metadata={"help": "task seeds every method runs on (keep them outside the controller's training range)"},
    )
    compare: list[str] = field(
        default_factory=lambda: ["default"],
        metadata={"help": "schedules run beside the learned one at the same budget ('default' is always included)"},
    )
    merge: bool = field(default=False, metadata={"help": "also save the learned side's model with its adapters merged, under merged/"})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "the target: model, suite, steps, tools, reward"})

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        if not isinstance(self.task_seeds, list) or not self.task_seeds:
            raise ConfigError(f"task_seeds: expected a non-empty list of task seeds, got {self.task_seeds!r}.")
        self.task_seeds = [int(check_number(f"task_seeds[{i}]", s, low=0, integer=True)) for i, s in enumerate(self.task_seeds)]
        if not isinstance(self.compare, list):
            raise ConfigError(f"compare: expected a list of schedule names, got {self.compare!r}.")
        self.compare = ["default", *[c for c in self.compare if c != "default"]]
        for name in self.compare:
            resolve_schedule_path(name)
        if not isinstance(self.merge, bool):
            raise ConfigError(f"merge: expected true or false, got {self.merge!r}.")


# -- the source run ----------------------------------------------------------------------------------
@dataclass
class Source:
    """What a transfer carries: a schedule (open loop) and/or a trained SB3 controller (closed loop)."""

    path: Path
    run: RunConfig  # the proxy run the decisions were learned on
    schedule: Schedule | None = None
    controller: Path | None = None
    policy: str = ""  # the train-controller policy name ("" for a bare schedule)
    env: EnvConfig | None = None  # what an episode was for the controller (phases, probes, prior)


def load_source(path: str | Path, mode: str) -> Source:
    """Read a train-controller run dir (or a run-schedule dir, or a schedule YAML); no weights load."""
    from metactl.config import load_config
    from metactl.controller_config import load_controller_config

    check_choice("mode", mode, MODES)
    p = Path(path)
    if p.is_file():
        if mode == "policy":
            raise ConfigError(f"source {p}: a schedule file carries no controller; --mode policy needs a train-controller run dir with controller.zip.")
        return Source(p, RunConfig(), schedule=Schedule.load(p))
    if not p.is_dir():
        raise ConfigError(f"source {str(p)!r} does not exist; give a train-controller run dir (metactl train-controller --out DIR) or a schedule YAML.")
    cfg_path = p / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(
            f"source {p}: no config.yaml, so it is not a train-controller run dir; train one with "
            f"`metactl train-controller --out {p}`, or pass a schedule YAML."
        )
    data = yaml.safe_load(cfg_path.read_text()) or {}
    if isinstance(data, dict) and "policy" in data:
        cfg = load_controller_config(cfg_path)
        source = Source(p, cfg.run, policy=cfg.policy, env=cfg.env)
    else:  # a run-schedule dir: a schedule and the run config it ran with
        source = Source(p, load_config(cfg_path))
    if mode == "schedule":
        sched = p / "schedule.yaml"
        if not sched.is_file():
            hint = f" (did the run finish? `metactl train-controller --resume {p}` completes it)" if source.policy else ""
            raise ConfigError(f"source {p}: no schedule.yaml to transfer{hint}.")
        source.schedule = Schedule.load(sched)
        return source
    from policies import POLICIES
    from policies.sb3 import CONTROLLER_FILE

    if not source.policy:
        raise ConfigError(f"source {p}: a run-schedule dir has no controller; --mode policy needs a train-controller run dir.")
    if not POLICIES[source.policy].uses_ppo:
        raise ConfigError(
            f"source {p}: its policy {source.policy!r} is not an SB3 controller (only ppo and bandit are); "
            "use --mode schedule to carry its schedule."
        )
    source.controller = p / CONTROLLER_FILE
    if not source.controller.is_file():
        raise ConfigError(f"source {p}: no {CONTROLLER_FILE} (did the run finish? `metactl train-controller --resume {p}` completes it).")
    return source


# -- config --------------------------------------------------------------------------------------------
def preset_path(model: str) -> Path | None:
    """``configs/transfer/<model>.yaml`` when metactl ships settings for that target."""
    path = CONFIGS / "transfer" / f"{model}.yaml"
    return path if path.is_file() else None


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


# -- checks before any weights load ------------------------------------------------------------------
@dataclass
class Plan:
    """Everything a transfer runs, resolved and checked."""

    config: TransferConfig
    source: Source
    schedules: dict[str, Schedule]  # label -> schedule (the learned one absent in policy mode)
    layers: str = ""  # the target's depth-group / module-kind mapping, when known before loading


def plan_transfer(cfg: TransferConfig, source: Source) -> Plan:
    """Check names, schedules, tools and the target's layer map without reading weights."""
    from metactl.adapters import preflight_layer_map
    from metactl.models import resolve_model
    from metactl.tasks import load_suite
    from metactl.tools import TOOLS

    resolve_model(cfg.run.model)
    suite = load_suite(cfg.run.suite, cfg.task_seeds[0])
    groups = cfg.run.training.layer_groups
    tools = [t for t in TOOLS if suite.data.get(t)]
    schedules: dict[str, Schedule] = {}
    if cfg.mode == "schedule":
        schedules[LEARNED] = source.schedule.regroup(groups)
    for name in cfg.compare:
        schedules[name] = Schedule.load(resolve_schedule_path(name)).regroup(groups)
    for label, sched in schedules.items():
        missing = [t for t in sched.tool_names if t not in tools]
        if missing:
            raise ConfigError(
                f"{label} schedule uses tool {missing[0]!r} but suite {cfg.run.suite!r} has no data for it "
                f"(its tools: {', '.join(tools)}); pick a suite with {missing[0]} data."
            )
    if cfg.mode == "policy":
        _check_observations(cfg, source, suite, tools)
    layer_map = preflight_layer_map(cfg.run.model, groups)
    return Plan(cfg, source, schedules, layer_map.describe() if layer_map else "")


def _check_observations(cfg: TransferConfig, source: Source, suite, tools: list[str]) -> None:
    """A closed-loop controller reads a vector: every entry must mean the same on the target."""
    from envs.observe import observation_labels
    from metactl.tasks import load_suite
    from metactl.tools import TOOLS
    from policies import POLICIES

    src_groups = source.run.training.layer_groups
    if cfg.run.training.layer_groups != src_groups:
        raise ConfigError(
            f"run.training.layer_groups={cfg.run.training.layer_groups}, but the controller acts on {src_groups} "
            f"groups; --mode policy needs the same grouping (drop the override, or use --mode schedule, which regroups)."
        )
    src_suite = load_suite(source.run.suite, cfg.task_seeds[0])
    src_tools = [t for t in TOOLS if src_suite.data.get(t)]
    progress = POLICIES[source.policy].env_id == "metactl/Adaptation-v0"
    phases = source.env.phases
    want = observation_labels(src_suite, src_tools, src_groups, phases, progress)
    got = observation_labels(suite, tools, src_groups, phases, progress)
    if want != got:
        diff = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        a = want[diff] if diff < len(want) else "(end)"
        b = got[diff] if diff < len(got) else "(end)"
        raise ConfigError(
            f"--mode policy: the controller was trained on observations of suite {source.run.suite!r} "
            f"({len(want)} entries); suite {cfg.run.suite!r} gives {len(got)}, differing at entry {diff} "
            f"({a!r} vs {b!r}). Use a suite with the same behaviours, tools and features, or --mode schedule."
        )


# -- running -------------------------------------------------------------------------------------------
@dataclass
class TransferResult:
    out: Path
    evaluation: Evaluation
    seconds: float
    layers: str
    schedule: Schedule | None = None
    merged: Path | None = None
    processes: int = 1  # data-parallel processes that trained (accelerate / torchrun)
    main: bool = True  # this process wrote the outputs (and should print)


def run_transfer(plan: Plan, out: str | Path, progress: bool = True) -> TransferResult:
    """Run the learned side and every compare schedule on each task seed; resume from ``out``.

    Launched with several processes (``accelerate launch``, ``torchrun``), every run trains data
    parallel through :mod:`metactl.parallel` (DDP): same jobs, same results, each process a slice
    of every batch; only the main process writes.
    """
    from metactl.io import read_jsonl
    from metactl.parallel import DataParallel, check_batches_cover, launched_world_size

    cfg = plan.config
    out = Path(out)
    t0 = time.perf_counter()
    if launched_world_size() > 1:
        check_batches_cover(cfg.run.tools, launched_world_size())
        cfg.run.training.torch_device()  # cuda asked for and absent: say so, do not fall back to CPU
    par = DataParallel.from_launch(cfg.run.training.device)
    main = par is None or par.is_main
    try:
        _claim(out, cfg, par)
        done = {(r["label"], r["task_seed"]): r for r in read_jsonl(out / RESULTS)} if (out / RESULTS).is_file() else {}
        return _run(plan, out, done, par, progress and main, t0)
    finally:
        if par is not None:
            par.end()


def _run(plan: Plan, out: Path, done: dict, par, progress: bool, t0: float) -> TransferResult:
    import pickle

    from tqdm.auto import tqdm

    from envs import BANDIT_ENV_ID, PhaseControlEnv, ScheduleBanditEnv
    from envs.config import EnvConfig
    from envs.jobs import Job, write_adapter_files
    from metactl.io import append_jsonl, atomic_write_text
    from metactl.runner import Engine

    cfg, source = plan.config, plan.source
    main = par is None or par.is_main
    engine = Engine(cfg.run, progress=progress, parallel=par)
    env_cfg = source.env or EnvConfig(phases=max(1, len(plan.schedules.get(LEARNED, Schedule([])).phases)))
    closed = cfg.mode == "policy"
    bandit = closed and _env_id(source) == BANDIT_ENV_ID
    env = (ScheduleBanditEnv if bandit else PhaseControlEnv)(run=cfg.run, env=env_cfg, engine=engine)
    actor = None
    if closed:
        from stable_baselines3 import PPO

        actor = PPO.load(source.controller, device="cpu").policy
        if actor.observation_space.shape != env.observation_space.shape or actor.action_space.shape != env.action_space.shape:
            raise ConfigError(
                f"controller {source.controller}: observation/action shapes {actor.observation_space.shape}/"
                f"{actor.action_space.shape} do not match the target env's {env.observation_space.shape}/"
                f"{env.action_space.shape}; use --mode schedule."
            )

    seed = cfg.run.training.seed
    labels = [LEARNED, *cfg.compare]
    jobs = []
    for label in labels:
        for ts in cfg.task_seeds:
            save = str(out / "adapters") if main and label == LEARNED and ts == cfg.task_seeds[0] else None
            if label == LEARNED and closed:
                jobs.append(Job(ts, seed, actor=pickle.dumps(actor), label=label, save_adapters=save))
            else:
                jobs.append(Job(ts, seed, schedule=plan.schedules[label], label=label, save_adapters=save))
    todo = [j for j in jobs if (j.label, j.task_seed) not in done]
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="transfer", unit="run", disable=not progress) as bar:
        for job in todo:
            bar.set_postfix_str(f"{job.label} on task {job.task_seed}")
            t = time.perf_counter()
            res = env.run_job(job)
            files = res.pop("adapter_files", None)
            if main and files:
                write_adapter_files(job.save_adapters, files)
            row = {
                "label": job.label, "task_seed": job.task_seed, "episode_seed": job.episode_seed,
                "scores": res["scores"], "base": res["base"], "schedule": res["schedule"].to_dict(),
                "seconds": round(time.perf_counter() - t, 2), "model_path": res["model_path"],
            }
            if main:
                append_jsonl(out / RESULTS, row)
            done[(job.label, job.task_seed)] = row
            bar.update(1)

    rows = [done[(j.label, j.task_seed)] for j in jobs]
    evaluation = Evaluation([{k: r[k] for k in ("label", "task_seed", "scores", "base")} for r in rows])
    first = done[(LEARNED, cfg.task_seeds[0])]
    schedule = Schedule.from_dict(first["schedule"], known_tools=engine.tool_names)
    schedule.name = f"{LEARNED} ({cfg.mode} mode) on {cfg.run.model}, task seed {cfg.task_seeds[0]}"
    layers = f"{cfg.run.model}: {engine.layer_map.describe()}"
    merged = None
    if par is not None:
        par.barrier()  # training is over on every rank; what is left is rank 0's writing
    if main:
        schedule.save(out / "schedule.yaml")
        atomic_write_text(out / "base_model.txt", engine.model_path + "\n")
        if cfg.merge:
            merged = merge_adapters(engine.model_path, out / "adapters", engine.tool_names, out / "merged")
    return TransferResult(out, evaluation, time.perf_counter() - t0, layers, schedule, merged,
                          processes=1 if par is None else par.world, main=main)


def _env_id(source: Source) -> str:
    from policies import POLICIES

    return POLICIES[source.policy].env_id


def _claim(out: Path, cfg: TransferConfig, par=None) -> None:
    """Start ``out`` or continue it; refuse a directory that holds a different transfer.

    In a parallel run every process checks before any writes (so all fail alike, and none sees
    the main one's half-written files); only the main one writes.
    """
    from metactl.io import atomic_write_text

    path = out / "config.yaml"
    fresh = not path.is_file()
    if not fresh:
        old = yaml.safe_load(path.read_text())
        if old != yaml.safe_load(cfg.to_yaml()):
            raise ConfigError(
                f"--out {out}: it holds a transfer with a different config; pick another --out "
                f"(or delete {out} to start afresh)."
            )
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: the directory exists, is not empty and holds no transfer; pick another --out.")
    if par is not None:
        par.barrier()
    if fresh and (par is None or par.is_main):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, cfg.to_commented_yaml())
    if par is not None:
        par.barrier()  # every rank reads the same results.jsonl after this


def merge_adapters(model_path: str, adapters: Path, tools: list[str], out: Path) -> Path:
    """The base model with every tool's saved adapter merged in, written with ``save_pretrained``.

    The adapters carry their final output scales in ``alpha_pattern`` (:meth:`AdapterSet.save`),
    so merging them one after another gives ``base + sum_t s_t B_t A_t``: the adapted model.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from metactl.io import atomic_write_dir

    def fill(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        for t in tools:
            model = PeftModel.from_pretrained(model, str(adapters / t)).merge_and_unload()
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(model_path).save_pretrained(str(tmp))

    return atomic_write_dir(out, fill)


__all__ = ["MODES", "Plan", "Source", "TransferConfig", "TransferResult", "load_source", "merge_adapters",
           "plan_transfer", "preset_path", "resolve_transfer_config", "run_transfer"]
