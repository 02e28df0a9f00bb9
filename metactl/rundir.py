"""The run directory a user keeps: resolved config, schedule, scores, peft adapters.

The directory is assembled in a temp sibling and swapped into place at the end, so an
interrupted or failed run leaves either the previous directory or nothing, never a half.
"""

from __future__ import annotations

import json
from pathlib import Path

from metactl.config import RunConfig
from metactl.io import atomic_write_dir
from metactl.runner import Engine, PhaseResult
from metactl.schedule import Schedule

SCORES = "scores.jsonl"


def write_schedule_run(
    out: str | Path,
    config: RunConfig,
    schedule: Schedule,
    engine: Engine,
    results: list[PhaseResult],
    seed: int,
) -> Path:
    def fill(tmp: Path) -> None:
        (tmp / "config.yaml").write_text(config.to_commented_yaml())
        (tmp / "schedule.yaml").write_text(schedule.to_yaml())
        rows = [{"episode": 0, "phase": -1, "seed": seed, "task_seed": config.task_seed, "scores": engine.task.base_scores, "base": True}]
        rows += [{"episode": 0, "seed": seed, "task_seed": config.task_seed, **r.to_row()} for r in results]
        (tmp / SCORES).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        engine.adapters.save(tmp / "adapters")
        (tmp / "base_model.txt").write_text(engine.model_path + "\n")
        write_tensorboard(tmp / "tb", engine.task.base_scores, results)

    return atomic_write_dir(out, fill)


def read_scores(run_dir: str | Path) -> list[dict]:
    from metactl.io import read_jsonl

    return read_jsonl(Path(run_dir) / SCORES)


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
