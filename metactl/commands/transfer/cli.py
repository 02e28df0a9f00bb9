"""``metactl transfer``: its options and help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metactl.commands.options import OVERWRITE, Quiet


def command(
    run_dir: Annotated[Path, typer.Argument(
        help="train-controller run dir (schedule.yaml, controller.zip), or a schedule YAML"
    )],
    model: Annotated[str, typer.Option(help="target model: proxy-large, smollm2-135m, an HF folder or a hub id")],
    out: Annotated[Path | None, typer.Option(
        help="output dir (default runs/transfer-<model>-<mode>); rerun the same command to resume"
    )] = None,
    mode: Annotated[str, typer.Option(help=(
        "schedule: replay the greedy schedule (open loop); policy: the controller picks each phase from the "
        "target's observations (closed loop)"
    ))] = "schedule",
    suite: Annotated[str | None, typer.Option(
        help="suite on the target (default: the preset's, else the source run's)"
    )] = None,
    steps: Annotated[int | None, typer.Option(help=(
        "optimiser steps per run, the same for every method (default: the preset's, else the source run's)"
    ))] = None,
    task_seed: Annotated[list[int], typer.Option(
        "--task-seed", help="task seed to compare on, repeatable (default 1000 1001 1002)"
    )] = [],  # noqa: B006
    compare: Annotated[list[str], typer.Option(
        help="extra schedule to run beside learned and default, repeatable (e.g. expert)"
    )] = [],  # noqa: B006
    merge: Annotated[bool, typer.Option(
        help="also save the learned model with its adapters merged (save_pretrained) under OUT/merged"
    )] = False,
    envelope: Annotated[bool, typer.Option(help=(
        "policy mode: keep each of the controller's actions inside the range it took in that phase on its training "
        "tasks (the source run's envelope.json); guards a model or suite whose readings it never trained on"
    ))] = False,
    guard: Annotated[str, typer.Option(help=(
        "policy mode: phase = in each phase whose reading lies farther from every reading the controller acted on "
        "in training than those lie from each other (the source run's guard.json), run its mean action there "
        "instead; hold = from the first such phase on, keep to the mean actions; off = closed loop everywhere"
    ))] = "off",
    config: Annotated[Path | None, typer.Option(
        help="transfer settings YAML (default configs/transfer/<model>.yaml when metactl ships one)"
    )] = None,
    set_: Annotated[list[str], typer.Option(
        "--set", help="override KEY=VALUE, repeatable: --set run.tools.sft.lr=1e-4"
    )] = [],  # noqa: B006
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE)] = False,
    quiet: Quiet = False,
) -> None:
    """Carry a controller's decisions from the proxy to a larger model, and compare with default.

    Adapters cannot move between models of different widths; the decisions can. A schedule names relative depth
    groups (layer l of L sits in group floor(l*G/L) of G), module kinds (attn, mlp, resolved from the target's
    own module names) and budget fractions, so it means the same on 4 or 30 layers. In policy mode the SB3
    controller itself acts on the target, reading the target run's scores, norms and interference through the same
    observation encoding.

    Every method (learned, default, any --compare) runs on each task seed at the same step budget and episode seed
    through the same runner; the table shows every score part side by side and the learned - default delta. OUT
    holds config.yaml, results.jsonl, schedule.yaml, the learned run's peft adapters (adapters/<tool>) and, with
    --merge, the merged model (merged/).
    """
    from metactl.commands.transfer.config import plan_from_cli
    from metactl.commands.transfer.report import comparison_text, write_comparison
    from metactl.commands.transfer.run import run_transfer
    from metactl.parallel import launched_as_main

    plan = plan_from_cli(run_dir, model, mode, suite=suite, steps=steps, task_seeds=task_seed, compare=compare,
                         merge=merge, envelope=envelope, guard=guard, config=config, overrides=set_)
    cfg = plan.config
    out = out or Path("runs") / f"transfer-{Path(model).name}-{cfg.mode}"
    quiet = quiet or not launched_as_main()  # one process of a parallel launch speaks for all
    if not quiet:
        if plan.preset is not None:
            typer.echo(f"settings: {plan.preset}", err=True)
        if plan.layers:
            typer.echo(f"layer map: {plan.layers}", err=True)
    result = run_transfer(plan, out, progress=not quiet, overwrite=overwrite)
    if not result.main:
        return
    text = comparison_text(cfg, result, run_dir)
    typer.echo("\n" + text, nl=False)
    write_comparison(out, text)
    merged = ", merged/" if result.merged else ""
    typer.echo(f"wrote {out} (results.jsonl, schedule.yaml, adapters/{merged}, comparison.txt)")
