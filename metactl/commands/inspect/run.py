"""``inspect_run``: every reading of one run on one task, assembled into a plain JSON-able report.

What runs where: the main process loads one engine, replays the policy greedily on the task
(closed loop for SB3 controllers) and the ``default`` schedule beside it, and does everything
that needs the trained adapters (ablations, Shapley values, per-layer readouts, saliency).
Meanwhile worker processes train the schedule variants (a phase removed, phases swapped, a
tool's phases merged) and the random baseline, through the same runner.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

from metactl.commands.inspect import sections
from metactl.commands.inspect.jobs import JobPool
from metactl.commands.inspect.readout import layer_readout
from metactl.commands.inspect.rollout import run_policy, run_schedule
from metactl.commands.inspect.source import RunDir, load_run_dir
from metactl.errors import ConfigError
from metactl.rundir import claim_output, holding, run_kind
from metactl.schedule import Schedule

log = logging.getLogger("metactl.inspect")


def resolve_task_seed(run_dir: RunDir, task_seed: int | None) -> int:
    from metactl.tasks import check_task_seed

    seeds, kept = run_dir.config.eval_task_seeds, run_dir.config.schedule_task_seed
    if task_seed is None:
        return kept
    hint = f" The run was judged on held-out task seeds {seeds}; --task-seed {kept} is the one its schedule.yaml shows."
    return check_task_seed("--task-seed", task_seed, hint)


def inspect_run(
    path: str | Path,
    task_seed: int | None = None,
    out: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Inspect the train-controller run at ``path`` on ``task_seed``; returns the report (see :mod:`.report`)."""
    t0 = time.perf_counter()
    rd = load_run_dir(path)
    task_seed = resolve_task_seed(rd, task_seed)
    if workers < 0:
        raise ConfigError(f"--workers: {workers} is negative; give 0 (train in this process) or more.")
    out = Path(out) if out is not None else rd.path / "inspect" / f"task-{task_seed}"
    with holding(out, "inspect"):
        return _inspect_into(out, rd, task_seed, workers, progress, t0)


def _inspect_into(out: Path, rd: RunDir, task_seed: int, workers: int, progress: bool, t0: float) -> dict:
    import torch
    from tqdm.auto import tqdm

    from metactl.runner import Engine

    # A rerun into its own output reuses the retrained variants (jobs.jsonl); any other dir must be empty.
    claim_output(out, "inspect", resume=run_kind(out) == "inspect")
    out.mkdir(parents=True, exist_ok=True)
    cfg = rd.config
    run = copy.deepcopy(cfg.run)
    run.task_seed = task_seed
    seed = run.training.seed
    groups = run.training.layer_groups
    default = Schedule.named("default", groups)
    default.name = "default"

    bar = tqdm(total=7, desc="inspect", unit="stage", disable=not progress)

    started: list[str] = []

    def stage(name: str) -> None:
        """Mark the previous stage done and show the one starting."""
        if started:
            bar.update(1)
        started.append(name)
        bar.set_postfix_str(name)

    pool = JobPool(run, out, workers)
    try:
        torch.set_num_threads(run.training.threads)
        engine = Engine(run, progress=False)
        pool.engine = engine  # with workers=0 the variants train here, after everything else
        total = run.training.total_steps
        random_keys = sections.submit_random(pool, engine, cfg, seed)
        default_variants = sections.submit_phase_ablations(pool, default, task_seed, seed)
        stage("greedy rollout")
        learned = run_policy(engine, rd, task_seed, seed, label=cfg.policy)
        learned.schedule.name = cfg.policy
        variants = sections.submit_phase_ablations(pool, learned.schedule, task_seed, seed)
        order = sections.submit_order(pool, learned.schedule, engine.tool_names, total, task_seed, seed)
        stage("attribution (learned)")
        learned_attr = sections.attribute(engine, learned)
        learned_readout = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
        stage("why")
        why = sections.why(rd, learned)
        stage("default episode")
        base_readout = sections.base_readout(engine)
        dflt = run_schedule(engine, default, seed, "default", cfg.env.quick_probes, cfg.env.interference_rows)
        stage("attribution (default)")
        default_attr = sections.attribute(engine, dflt)
        default_readout = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
        stage("retrained variants")
        with tqdm(
            total=len(pool), desc="retraining variants", unit="episode", leave=False, disable=not progress
        ) as vbar:
            for keys in (default_variants, variants, order, random_keys):
                for k in keys.values():
                    pool.result(k)
                    vbar.update(1)
        learned_attr["phases"] = sections.phase_loo(pool, variants, learned.final)
        default_attr["phases"] = sections.phase_loo(pool, default_variants, dflt.final)
        stage("learning curve")
        report = {
            "run_dir": str(rd.path.resolve()),
            "out": str(out.resolve()),
            "task_seed": task_seed,
            "episode_seed": seed,
            "policy": cfg.policy,
            "closed_loop": rd.closed_loop,
            "model": run.model,
            "suite": run.suite,
            "tools": list(engine.tool_names),
            "layer_groups": groups,
            "layers": len(learned_readout[next(iter(learned_readout))]),
            "total_steps": total,
            "layer_map": engine.layer_map.describe(),
            "decisions": {cfg.policy: sections.decisions(learned, total), "default": sections.decisions(dflt, total)},
            "learning": sections.learning(rd, pool, random_keys),
            "attribution": {cfg.policy: learned_attr, "default": default_attr},
            "order": sections.order(pool, order, learned),
            "why": why,
            "implantation": {
                "cosines": {cfg.policy: learned.cosines, "default": dflt.cosines},
                "cka": {
                    label: [t.final[f"cka/{i}"] for i in range(sections.n_layers(t.final))]
                    for label, t in ((cfg.policy, learned), ("default", dflt))
                },
                "cka_by_phase": {
                    label: [[s[f"observe/cka/{i}"] for i in range(sections.n_layers(s, "observe/"))]
                            for s in t.phase_scores if s]
                    for label, t in ((cfg.policy, learned), ("default", dflt))
                },
                "readout": {"base": base_readout, cfg.policy: learned_readout, "default": default_readout},
            },
            "retrained_episodes": pool.trained,
            "model_scorings": learned_attr.pop("_scorings") + default_attr.pop("_scorings"),
        }
        stage("done")
    finally:
        bar.close()
        pool.close()
    report["implantation"]["summary"] = sections.implantation_summary(report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
