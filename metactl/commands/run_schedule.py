"""``metactl run-schedule``: one schedule on (model, suite, seed), its per-phase scores and run dir.

Run directory (written atomically, when the run has finished)::

    config.yaml     the resolved run config
    schedule.yaml   the schedule that ran
    scores.jsonl    the base's scores (phase -1), then one row per phase
    adapters/       every tool's adapter, peft format, on the model of base_model.txt; after a schedule
                    merged, on adapters/merged_base/ (that model with the merges folded in, a plain
                    transformers folder)
    base_model.txt  the model path the adapters belong to
    tb/             TensorBoard: scores and losses per phase

While it runs, ``OUT.partial/checkpoint.pt`` holds the state after the last complete phase, and the
same command resumes from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metactl.config import RunConfig, load_config
from metactl.layer_map import preflight_layer_map
from metactl.rundir import ADAPTERS, BASE_MODEL, CONFIG, SCHEDULE, SCORES, atomic_write_dir, claim_output, write_jsonl
from metactl.runner import Engine, PhaseResult, check_schedule
from metactl.schedule import Schedule
from metactl.score_parts import reported_parts
from metactl.tables import render_table


# -- config -----------------------------------------------------------------------------------------
def resolve(schedule: str, config: Path | None = None, overrides: list[str] | None = None,
            out: Path | None = None, overwrite: bool = False) -> tuple[RunConfig, Schedule]:
    """The run config and the schedule, checked against each other, the suite, the model's layers
    and the output dir (:func:`metactl.rundir.claim_output`), all before any weights load."""
    cfg = load_config(config, overrides)
    sched = Schedule.named(schedule)
    check_schedule(cfg, sched)
    preflight_layer_map(cfg.model, cfg.training.layer_groups)
    if out is not None:  # the dir is replaced atomically when the run has finished, not before
        claim_output(out, "run-schedule", overwrite=overwrite, resumable=False, check_only=True)
    return cfg, sched


# -- run ------------------------------------------------------------------------------------------
@dataclass
class ScheduleRun:
    engine: Engine
    results: list[PhaseResult]


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def run(
    cfg: RunConfig,
    sched: Schedule,
    out: Path,
    progress: bool = True,
    on_phase: Callable[[PhaseResult], None] | None = None,
    on_resume: Callable[[Path], None] | None = None,
) -> ScheduleRun:
    """Train and score ``sched``, checkpointing after every phase in ``OUT.partial/``, then write
    ``out`` and drop the checkpoint."""
    engine = Engine(cfg, tools=sched.tool_names, progress=progress)
    engine.check_schedule(sched)
    checkpoint = partial_dir(out) / "checkpoint.pt"
    if checkpoint.is_file() and on_resume is not None:
        on_resume(checkpoint)
    results = engine.run(sched, seed=cfg.training.seed, on_phase=on_phase, progress=progress, checkpoint=checkpoint)
    write_run_dir(out, cfg, sched, engine, results)
    # Only what this run wrote there: a checkpoint it no longer needs.
    checkpoint.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # left in place if anything else is in it
        partial_dir(out).rmdir()
    return ScheduleRun(engine, results)


def write_run_dir(
    out: str | Path,
    config: RunConfig,
    schedule: Schedule,
    engine: Engine,
    results: list[PhaseResult],
    seed: int | None = None,
) -> Path:
    """The run dir, assembled aside and swapped into place: an interrupted or failed run leaves
    either the previous directory or nothing, never a half. ``seed``: the episode seed the
    results ran with (default ``training.seed``)."""
    seed = config.training.seed if seed is None else seed

    def fill(tmp: Path) -> None:
        (tmp / CONFIG).write_text(config.to_commented_yaml())
        (tmp / SCHEDULE).write_text(schedule.to_yaml())
        rows = [
            {
                "episode": 0,
                "phase": -1,
                "seed": seed,
                "task_seed": config.task_seed,
                "scores": engine.task.base_scores,
                "base": True,
            }
        ]
        rows += [{"episode": 0, "seed": seed, "task_seed": config.task_seed, **r.to_row()} for r in results]
        write_jsonl(tmp / SCORES, rows)
        engine.adapters.save(tmp / ADAPTERS)
        (tmp / BASE_MODEL).write_text(engine.model_path + "\n")
        write_tensorboard(tmp / "tb", engine.task.base_scores, results)

    return atomic_write_dir(out, fill)


def write_tensorboard(log_dir: Path, base: dict[str, float], results: list[PhaseResult]) -> None:
    """Scores per phase (step = phase index, base at -1) for ``tensorboard --logdir RUN_DIR/tb``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        rows = [(-1, base)] + [(r.phase, r.scores) for r in results if r.scores]
        for step, scores in rows:
            for key, value in scores.items():
                writer.add_scalar(f"scores/{key}", value, step)
        for r in results:
            for tool, loss in r.losses.items():
                writer.add_scalar(f"loss/{tool}", loss, r.phase)


# -- report ---------------------------------------------------------------------------------------
def phase_table(run: ScheduleRun) -> str:
    """The base's scores, then each phase's steps, seconds and scores."""
    base = run.engine.task.base_scores
    parts = reported_parts(base)
    rows = [["phase", "steps", "s", *parts], ["base", "-", "-", *(f"{base[p]:.3f}" for p in parts)]]
    for r in run.results:
        steps = ",".join(f"{t}:{n}" for t, n in r.tool_steps.items())
        rows.append(
            [str(r.phase), steps, f"{r.seconds:.1f}", *(f"{r.scores[p]:.3f}" if r.scores else "" for p in parts)]
        )
    return render_table(rows)
