"""``metactl train-controller``: its options and help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from metactl.commands.options import OVERWRITE, given


def command(
    config: Annotated[str, typer.Option(
        help="controller config: a built-in name (configs/train/) or a YAML path; every option is explained in it"
    )] = "default",
    set_: Annotated[list[str], typer.Option("--set", help=(
        "override KEY=VALUE, dot style, repeatable: --set total_episodes=16 --set run.training.total_steps=48"
    ))] = [],  # noqa: B006
    policy: Annotated[str | None, typer.Option(
        help="ppo (default), bandit, random, optuna, default, expert: see `metactl policies`"
    )] = None,
    episodes: Annotated[int | None, typer.Option(help="proxy episodes to spend (total_episodes)")] = None,
    seed: Annotated[int | None, typer.Option(help="controller seed (policy init, task draws, exploration)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/controller-<policy>-s<seed>)")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="continue an interrupted run from its directory (its config.yaml wins)"
    )] = None,
    vec_env: Annotated[str | None, typer.Option(help=(
        "what runs the envs: batched (policy ppo: n_envs episodes batched on population engines, one 1-thread "
        "process per core; what auto picks for ppo), subproc (local processes), ray (Ray actors, local or on a "
        "cluster), dummy (this process)"
    ))] = None,
    ray_address: Annotated[str | None, typer.Option(help=(
        "with --vec-env ray: 'auto' joins the cluster `ray start` made, HOST:PORT or ray://HOST:10001 another; "
        "unset starts a local Ray"
    ))] = None,
    overwrite: Annotated[bool, typer.Option(help=OVERWRITE)] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Learn how to conduct the tools on a small proxy, then compare with the hand schedules.

    Each episode adapts the proxy model on a task drawn from env.train_task_seeds, run by the same runner as
    run-schedule. The policy (SB3 PPO by default) sets every tool's step share, phase by phase, as a residual around
    env.prior (env.controls=share, the default: which tools run and how they interleave, each at the prior's learning
    rate and output scale; env.controls=tool adds one learning-rate multiplier and output scale per tool,
    env.controls=layer one per layer group and module kind). When the budget is spent, the learned
    policy and the compare schedules (default, expert, the published hand rules) are run on held-out task seeds
    of the training suite and of each eval suite, and a table of every score part (mean ± std) is printed.

    The run dir holds config.yaml, scores.jsonl (one row per episode and phase), checkpoints/, controller.zip,
    schedule.yaml (the greedy schedule on schedule_task_seed, a task no score is reported on), averaged.yaml
    (a closed-loop policy's phase controls averaged over training tasks: one fixed schedule, for run-schedule or
    transfer), envelope.json (the range of its actions per phase on those tasks, for compare's 'enveloped' and
    transfer --envelope), guard.json (its observations and actions on those tasks, for compare's 'guarded' and
    transfer --guard), eval.jsonl and TensorBoard events in tb/. Kill it at any point and pass --resume RUN_DIR
    to continue.

    With --vec-env ray the envs are Ray actors (pip install 'metactl[ray]'), on this machine or, with
    --ray-address auto, on the cluster `ray start` joined; the PPO learner stays here. A worker that dies is
    restarted (ray.max_restarts) and its episode counts as truncated.
    """
    from metactl.commands.train_controller import config as command_config
    from metactl.commands.train_controller.report import result_text
    from metactl.commands.train_controller.run import train_controller as run
    from metactl.rundir import SEARCH_DIR

    options = given(policy=policy, total_episodes=episodes, seed=seed, vec_env=vec_env,
                       **{"ray.address": ray_address})
    cfg, out = command_config.resolve(config, [*set_, *options], resume, out)
    result = run(cfg, out, resume=resume is not None, progress=not quiet, overwrite=overwrite)
    typer.echo("\n" + result_text(cfg.eval_task_seeds, result.evaluation, result.episodes, result.seconds,
                                    result.searched))
    search = f", {SEARCH_DIR}/ (the search stage)" if result.searched else ""
    typer.echo(f"wrote {out} (controller, schedule.yaml, scores.jsonl, eval.jsonl, tb/{search})")
