"""The ``metactl`` command line: options in, each command's config / run / report modules out.

Every :class:`MetactlError` a command raises (bad input, named with the field, the value, what is
allowed and the fix) is printed as ``error: ...`` with exit code 2, by the app's group, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from metactl.commands.inspect import cli as inspect_cli
from metactl.commands.options import OVERWRITE, Quiet, SetOption, given
from metactl.commands.sweep import cli as sweep_cli
from metactl.commands.train_controller import cli as train_controller_cli
from metactl.commands.transfer import cli as transfer_cli
from metactl.errors import MetactlError


class _Group(TyperGroup):
    def invoke(self, ctx: typer.Context) -> object:
        try:
            return super().invoke(ctx)
        except MetactlError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(
    cls=_Group,
    help="metactl learns how to conduct model-adaptation tools (SFT, DPO, retain; GRPO and merges opt-in) "
    "per layer and phase.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: paragraphs re-wrapped to the terminal, and no rich markup to eat text such
    # as `metactl[ray]`.
    rich_markup_mode=None,
)



@app.command()
def models() -> None:
    """List the built-in model names and whether their weights are ready offline."""
    from metactl.models import BUILTIN_MODELS, resolve_model
    from metactl.tables import render_table

    rows = [["name", "what it is", "weights"]]
    rows += [[name, desc, resolve_model(name).status()] for name, desc in BUILTIN_MODELS.items()]
    typer.echo(render_table(rows))
    typer.echo("Any Hugging Face model folder (or hub id, on a connected machine) works as --model too.")


@app.command()
def tools() -> None:
    """List the registered tools and their options."""
    from metactl.rewards import REWARDS
    from metactl.tasks.suite import SAMPLING_TOOLS
    from metactl.tools import DEFAULT_TOOLS, TOOLS

    for name, cls in TOOLS.items():
        line = f"{name}: {cls.__module__.split('.')[-1]} rows need {', '.join(cls.fields)}"
        if name in SAMPLING_TOOLS:
            line += f" and the columns of the suite's reward (suite.yaml rewards.{name}: {', '.join(REWARDS)})"
        if name not in DEFAULT_TOOLS:
            line += f"; opt-in: --set tools.{name}={{}}"
        typer.echo(line)
        for field, help_text in cls.Config.help().items():
            typer.echo(f"    tools.{name}.{field}: {help_text}")
    typer.echo(
        "merge (a schedule action, schema_version 2, not a tool): a phase's 'merge: [tool, ...]' folds those adapters "
        "into the base at its end (coefficient, toward_init as options) and restarts them; env.merge lets a "
        "controller decide it (docs/merge.md)"
    )


@app.command()
def policies() -> None:
    """List the controllers and baselines train-controller can run."""
    from metactl.policies import POLICIES

    for name, cls in POLICIES.items():
        typer.echo(f"{name:>8}  {cls.help}")


@app.command("show-config")
def show_config(
    config: Annotated[Path | None, typer.Option(help="YAML run config to resolve")] = None,
    set_: SetOption = [],  # noqa: B006
) -> None:
    """Print the fully resolved run config (defaults + YAML + overrides)."""
    from metactl.config import load_config

    typer.echo(load_config(config, set_).to_commented_yaml())


@app.command("run-schedule")
def run_schedule(
    out: Annotated[Path, typer.Option(help="run directory to write (config, schedule, scores.jsonl, adapters/)")],
    schedule: Annotated[
        str, typer.Option(help="built-in schedule name (default, expert) or a schedule YAML")
    ] = "default",
    model: Annotated[str | None, typer.Option(help="built-in model name, HF folder or hub id")] = None,
    suite: Annotated[str | None, typer.Option(help="built-in suite name or folder with suite.yaml")] = None,
    task_seed: Annotated[int | None, typer.Option(help="seed the built-in suite is generated from")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of adapter init and batch sampling")] = None,
    steps: Annotated[int | None, typer.Option(help="total optimiser steps (training.total_steps)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config (see configs/run/)")] = None,
    set_: SetOption = [],  # noqa: B006
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE)] = False,
    quiet: Quiet = False,
) -> None:
    """Execute one schedule on (model, suite, seed), print per-phase scores and write the run dir.

    Everything is validated before any weights load; the run directory appears only when the run has finished
    (it is written atomically). After every phase the run's state is checkpointed in OUT.partial/; rerunning the
    same command after an interruption resumes after the last complete phase.
    """
    from metactl.commands import run_schedule as command

    options = given(
        model=model, suite=suite, task_seed=task_seed, **{"training.seed": seed, "training.total_steps": steps}
    )
    cfg, sched = command.resolve(schedule, config, [*set_, *options], out=out, overwrite=overwrite)

    def on_phase(r) -> None:
        if not quiet:
            typer.echo(f"phase {r.phase}: {r.tool_steps} in {r.seconds:.1f}s", err=True)

    def on_resume(checkpoint: Path) -> None:
        if not quiet:
            typer.echo(f"resuming from {checkpoint}", err=True)

    result = command.run(cfg, sched, out, progress=not quiet, on_phase=on_phase, on_resume=on_resume)
    typer.echo(command.phase_table(result))
    typer.echo(f"wrote {out}")


app.command("train-controller")(train_controller_cli.command)
app.command("transfer")(transfer_cli.command)
app.command("inspect")(inspect_cli.command)
app.command("sweep")(sweep_cli.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
