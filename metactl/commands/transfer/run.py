"""``metactl transfer``'s run: carry a controller's decisions from the proxy to another model.

Adapters cannot move between models of different widths; decisions can. A schedule speaks in
relative depth groups, module kinds and budget fractions (:mod:`metactl.schedule`), and the
runner maps those onto any decoder whose blocks sit in one ``nn.ModuleList``
(:func:`metactl.layer_map.resolve_layer_map`: Llama, GPT-2, Qwen, ...). Two modes:

- ``schedule`` (open loop): the controller's greedy ``schedule.yaml`` replayed on the target.
- ``policy`` (closed loop): the SB3 controller acts in the target's own environment, choosing
  each phase from the target run's scores, adapter norms and interference readings, encoded by
  the same :class:`metactl.envs.observe.Observer` it was trained on.

Every transfer also runs ``default`` (and any other ``compare`` schedule) at the same step budget
on the same tasks and seeds, through the same runner, so the table shows what the transfer bought.

Output directory::

    config.yaml     the resolved transfer config (source, mode, tasks, the target's run config)
    results.jsonl   one row per (method, task seed), appended as each finishes; a rerun resumes
    schedule.yaml   what the learned side ran on the first task (policy mode: what it chose)
    adapters/<tool> the learned side's adapters on the first task, peft format (on adapters/merged_base/ when its
                    schedule merged)
    merged/         with ``merge``: the base with those adapters merged (``save_pretrained``)
    comparison.txt  the side-by-side table the command prints
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from metactl.commands.transfer.config import LEARNED, Plan, TransferConfig
from metactl.envs import PHASE_ENV_ID, make
from metactl.envs.config import EnvConfig
from metactl.envs.jobs import Job, write_adapter_files
from metactl.errors import ConfigError
from metactl.evaluation import Evaluation
from metactl.parallel import DataParallel, check_batches_cover, launched_world_size
from metactl.policies.sb3 import load_ppo
from metactl.rundir import (
    ADAPTERS,
    BASE_MODEL,
    CONFIG,
    RESULTS,
    SCHEDULE,
    append_jsonl,
    atomic_write_dir,
    atomic_write_text,
    claim_output,
    read_config_data,
    read_jsonl,
    run_kind,
)
from metactl.runner import Engine
from metactl.schedule import Schedule


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


def run_transfer(plan: Plan, out: str | Path, progress: bool = True, overwrite: bool = False) -> TransferResult:
    """Run the learned side and every compare schedule on each task seed; resume from ``out``.

    Launched with several processes (``accelerate launch``, ``torchrun``), every run trains data
    parallel through :mod:`metactl.parallel` (DDP): same jobs, same results, each process a slice
    of every batch; only the main process writes.
    """
    cfg = plan.config
    out = Path(out)
    t0 = time.perf_counter()
    if launched_world_size() > 1:
        check_batches_cover(cfg.run.tools, launched_world_size())
        cfg.run.training.torch_device()  # cuda asked for and absent: say so, do not fall back to CPU
    par = DataParallel.from_launch(cfg.run.training.device)
    main = par is None or par.is_main
    finished = False
    try:
        _claim(out, cfg, par, overwrite)
        done = {(r["label"], r["task_seed"]): r for r in read_jsonl(out / RESULTS, appended=True)}
        result = _run(plan, out, done, par, progress and main, t0)
        finished = True
        return result
    finally:
        if par is not None:
            par.end(wait=finished)


def _run(plan: Plan, out: Path, done: dict, par, progress: bool, t0: float) -> TransferResult:
    from tqdm.auto import tqdm

    cfg, source = plan.config, plan.source
    main = par is None or par.is_main
    engine = Engine(cfg.run, progress=progress, parallel=par)
    env_cfg = source.env or EnvConfig(phases=max(1, len(plan.schedules.get(LEARNED, Schedule([])).phases)))
    closed = cfg.mode == "policy"
    env = make(source.env_id if closed else PHASE_ENV_ID, run=cfg.run, env=env_cfg, engine=engine)
    actor = None
    if closed:
        actor = load_ppo(source.controller, env.observation_space, env.action_space).policy
        if cfg.envelope:
            from metactl.policies.envelope import ActionEnvelope, EnvelopedActor
            from metactl.rundir import ENVELOPE

            actor = EnvelopedActor(actor, ActionEnvelope.load(source.path / ENVELOPE), env.observation_labels)
        if cfg.guard != "off":
            from metactl.policies.guard import GuardedActor, ObservationGuard
            from metactl.rundir import GUARD

            guard = ObservationGuard.load(source.path / GUARD)
            actor = GuardedActor(actor, guard, env.observation_labels, hold=cfg.guard == "hold")


    seed = cfg.run.training.seed
    labels = [LEARNED, *cfg.compare]
    jobs = []
    for label in labels:
        for ts in cfg.task_seeds:
            save = str(out / ADAPTERS) if main and label == LEARNED and ts == cfg.task_seeds[0] else None
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
            if "actions" in res:  # closed loop: what the controller asked for, phase by phase
                row["actions"] = res["actions"]
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
        schedule.save(out / SCHEDULE)
        atomic_write_text(out / BASE_MODEL, engine.model_path + "\n")
        if cfg.merge:
            merged = merge_adapters(engine.model_path, out / ADAPTERS, engine.tool_names, out / "merged")
    return TransferResult(out, evaluation, time.perf_counter() - t0, layers, schedule, merged,
                          processes=1 if par is None else par.world, main=main)


def _claim(out: Path, cfg: TransferConfig, par: DataParallel | None = None, overwrite: bool = False) -> None:
    """Start ``out``, or continue the same transfer there (same config: a rerun resumes).

    In a parallel run every process checks before any writes (so all fail alike, and none sees
    the main one's half-written files); only the main one writes.
    """
    main = par is None or par.is_main
    kind = run_kind(out)
    stored = read_config_data(out) if kind == "transfer" else None
    if isinstance(stored, dict):
        stored.setdefault("envelope", False)  # added later: a transfer dir from before ran without it
        stored.setdefault("guard", "off")  # likewise
    same = kind == "transfer" and stored == yaml.safe_load(cfg.to_yaml())
    if not same:
        if kind == "transfer" and not overwrite:
            raise ConfigError(
                f"--out {out}: it holds a transfer with a different config; pass --overwrite to replace it, or "
                "pick another --out."
            )
        claim_output(out, "transfer", overwrite=overwrite, resumable=False, check_only=True)
    if par is not None:
        par.barrier()
    if not same and main:
        claim_output(out, "transfer", overwrite=overwrite, resumable=False)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CONFIG, cfg.to_commented_yaml())
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

    from metactl.adapters import MERGED_BASE

    if (adapters / MERGED_BASE).is_dir():  # the schedule merged: its adapters sit on the merged base
        model_path = str(adapters / MERGED_BASE)

    def fill(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        for t in tools:
            model = PeftModel.from_pretrained(model, str(adapters / t)).merge_and_unload()
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(model_path).save_pretrained(str(tmp))

    return atomic_write_dir(out, fill)
