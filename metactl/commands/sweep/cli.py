"""``metactl sweep``: its options and help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metactl.commands.options import OVERWRITE


def command(
    config: Annotated[str, typer.Option(help=(
        "sweep config: a built-in name (configs/sweep/: seeds, bench, ppo-tpe) or a YAML path; every option is "
        "explained in it"
    ))] = "seeds",
    set_: Annotated[list[str], typer.Option("--set", help=(
        "override KEY=VALUE, repeatable: --set 'grid={seed: [0, 1, 2, 3]}' --set 'set=[total_episodes=16]'"
    ))] = [],  # noqa: B006
    out: Annotated[Path | None, typer.Option(help="sweep directory (default runs/sweep-<config name>)")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="continue an interrupted sweep from its directory (its sweep.yaml wins)"
    )] = None,
    ray_address: Annotated[str | None, typer.Option(help=(
        "'auto' joins the cluster `ray start` made, HOST:PORT or ray://HOST:10001 another; unset starts a local Ray"
    ))] = None,
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE)] = False,
    quiet: Annotated[bool, typer.Option(help="no Tune progress output")] = False,
) -> None:
    """Run many train-controller trials on Ray Tune: a grid (controller seeds, policies) or an Optuna TPE search.

    Every trial is one train-controller run (same runner, same envs) with its own settings, scored on the sweep's
    task_seeds (validation tasks 2000-2004 by default, apart from the 1000-1002 of train-controller's table). A
    grid runs every combination of `grid` values (tune.grid_search); a search lets Optuna TPE (OptunaSearch behind
    a ConcurrencyLimiter) propose values for the keys of search.space, each under search.repeats controller seeds.
    Each trial reserves its envs (one placement-group bundle per env actor with vec_env: ray), so trials never
    oversubscribe a node.

    Needs pip install 'metactl[tune]'. The directory holds sweep.yaml, trials/<name>/ (each a resumable
    train-controller run dir), tune/ (Ray Tune's state), results.jsonl and summary.md; the table of settings
    (mean ± std over seeds, best first) is printed at the end. Kill it at any point and pass --resume DIR to
    continue: finished trials are not rerun.
    """
    from metactl.commands.sweep import config as command_config

    command_config.require_tune()
    cfg, out = command_config.resolve(config, set_, resume, out, ray_address)

    from metactl.commands.sweep.run import run_sweep
    from metactl.tables import render_table

    result = run_sweep(cfg, out, resume=resume is not None, progress=not quiet, overwrite=overwrite)
    typer.echo(f"\n{len(result.rows)} trials, task seeds {cfg.task_seeds} (mean ± std over each setting's trials, "
               f"best by {cfg.metric} first), {result.seconds:.0f}s:")
    typer.echo(render_table(result.table))
    if result.errors:
        typer.secho(f"{result.errors} trial(s) failed; their errors are under {result.out / 'tune'}. Rerun with "
                    "--resume to retry them.", fg="yellow", err=True)
    typer.echo(f"wrote {result.out} (summary.md, results.jsonl, trials/, tune/)")
