"""The ``metactl`` command line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from metactl.errors import ConfigError, MetactlError
from metactl.paths import CONFIGS, resolve_schedule_path

app = typer.Typer(
    help="metactl learns how to conduct model-adaptation tools (SFT, DPO, retain) per layer and phase.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SCORE_COLUMNS = ["target/style", "target/truth", "heldout/style", "heldout/truth", "kl", "cka", "composite"]


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(code=2)


@app.command()
def models() -> None:
    """List the built-in model names and whether their weights are ready offline."""
    from rich.console import Console
    from rich.table import Table

    from metactl.models import BUILTIN_MODELS, resolve_model

    table = Table("name", "what it is", "weights")
    for name, desc in BUILTIN_MODELS.items():
        table.add_row(name, desc, resolve_model(name).status())
    Console().print(table)
    typer.echo("Any Hugging Face model folder (or hub id, on a connected machine) works as --model too.")


@app.command()
def tools() -> None:
    """List the registered tools and their options."""
    from metactl.tools import TOOLS

    for name, cls in TOOLS.items():
        typer.echo(f"{name}: {cls.__module__.split('.')[-1]} rows need {', '.join(cls.fields)}")
        for field, help_text in cls.Config.help().items():
            typer.echo(f"    tools.{name}.{field}: {help_text}")


@app.command("show-config")
def show_config(
    config: Annotated[Path | None, typer.Option(help="YAML run config to resolve")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override, e.g. --set training.total_steps=64")] = [],  # noqa: B006
) -> None:
    """Print the fully resolved run config (defaults + YAML + overrides)."""
    from metactl.config import load_config

    try:
        typer.echo(load_config(config, set_).to_commented_yaml())
    except MetactlError as exc:
        _fail(exc)


@app.command("run-schedule")
def run_schedule(
    out: Annotated[Path, typer.Option(help="run directory to write (config, schedule, scores.jsonl, adapters/)")],
    schedule: Annotated[str, typer.Option(help="built-in schedule name (default, expert) or a schedule YAML")] = "default",
    model: Annotated[str | None, typer.Option(help="built-in model name, HF folder or hub id")] = None,
    suite: Annotated[str | None, typer.Option(help="built-in suite name or folder with suite.yaml")] = None,
    task_seed: Annotated[int | None, typer.Option(help="seed the built-in suite is generated from")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of adapter init and batch sampling")] = None,
    steps: Annotated[int | None, typer.Option(help="total optimiser steps (training.total_steps)")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config (see configs/run/)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="config override KEY=VALUE, repeatable")] = [],  # noqa: B006
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Execute one schedule on (model, suite, seed), print per-phase scores and write the run dir.

    Everything is validated before any weights load; the run directory appears only when the run has finished (it is written atomically). After every phase the run's state is checkpointed in OUT.partial/; rerunning the same command after an interruption resumes after the last complete phase.
    """
    from metactl.config import load_config
    from metactl.schedule import Schedule

    try:
        overrides = list(set_)
        for key, value in (("model", model), ("suite", suite), ("task_seed", task_seed),
                           ("training.seed", seed), ("training.total_steps", steps)):
            if value is not None:
                overrides.append(f"{key}={value}")
        cfg = load_config(config, overrides)
        sched = Schedule.load(resolve_schedule_path(schedule))
        # Engine checks the model and suite names before it reads weights; this one it can only
        # check after loading the model, so it is checked here first.
        if sched.layer_groups != cfg.training.layer_groups:
            raise ConfigError(
                f"schedule layer_groups={sched.layer_groups} but training.layer_groups={cfg.training.layer_groups}; "
                f"pass --set training.layer_groups={sched.layer_groups}."
            )
    except MetactlError as exc:
        _fail(exc)

    from metactl.rundir import write_schedule_run
    from metactl.runner import Engine

    try:
        engine = Engine(cfg, tools=sched.tool_names, progress=not quiet)
        engine.check_schedule(sched)
    except MetactlError as exc:
        _fail(exc)
    rows = [("base", "-", "-", engine.task.base_scores)]

    def on_phase(r) -> None:
        if not quiet:
            typer.echo(f"phase {r.phase}: {r.tool_steps} in {r.seconds:.1f}s", err=True)

    partial = out.with_name(out.name + ".partial")
    checkpoint = partial / "checkpoint.pt"
    if checkpoint.is_file() and not quiet:
        typer.echo(f"resuming from {checkpoint}", err=True)
    try:
        results = engine.run(sched, seed=cfg.training.seed, on_phase=on_phase, progress=not quiet, checkpoint=checkpoint)
    except MetactlError as exc:
        _fail(exc)
    rows += [(str(r.phase), ",".join(f"{t}:{n}" for t, n in r.tool_steps.items()), f"{r.seconds:.1f}", r.scores) for r in results]
    print_score_table(rows)
    path = write_schedule_run(out, cfg, sched, engine, results, cfg.training.seed)
    shutil.rmtree(partial, ignore_errors=True)
    typer.echo(f"wrote {path}")


@app.command("train-controller")
def train_controller_cmd(
    config: Annotated[Path, typer.Option(help="controller config YAML (configs/train/*.yaml); every option is explained in it")] = Path("configs/train/default.yaml"),
    set_: Annotated[list[str], typer.Option("--set", help="override KEY=VALUE, dot style, repeatable: --set total_episodes=16 --set run.training.total_steps=48")] = [],  # noqa: B006
    policy: Annotated[str | None, typer.Option(help="ppo (default), bandit, random, optuna, default, expert: see `metactl policies`")] = None,
    episodes: Annotated[int | None, typer.Option(help="proxy episodes to spend (total_episodes)")] = None,
    seed: Annotated[int | None, typer.Option(help="controller seed (policy init, task draws, exploration)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/controller-<policy>-s<seed>)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue an interrupted run from its directory (its config.yaml wins)")] = None,
    vec_env: Annotated[str | None, typer.Option(help="what runs the envs: subproc (local processes), ray (Ray actors, local or on a cluster), dummy (this process)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="with --vec-env ray: 'auto' joins the cluster `ray start` made, HOST:PORT or ray://HOST:10001 another; unset starts a local Ray")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Learn how to conduct the tools on a small proxy, then compare with the hand schedules.

    Each episode adapts the proxy model on a task drawn from env.train_task_seeds, run by the same runner as run-schedule. The policy (SB3 PPO by default) sets every tool's step share, learning-rate multiplier and output scale per layer group and module kind, phase by phase, as a residual around env.prior. When the budget is spent, the learned policy, the default and the expert schedule are run on held-out task seeds and a table of every score part (mean ± std) is printed.

    The run dir holds config.yaml, scores.jsonl (one row per episode and phase), checkpoints/, controller.zip, schedule.yaml (the greedy schedule on the first held-out task), eval.jsonl and TensorBoard events in tb/. Kill it at any point and pass --resume RUN_DIR to continue.

    With --vec-env ray the envs are Ray actors (pip install 'metactl[ray]'), on this machine or, with --ray-address auto, on the cluster `ray start` joined; the PPO learner stays here. A worker that dies is restarted (ray.max_restarts) and its episode counts as truncated.
    """
    from metactl.controller_config import load_controller_config

    try:
        if resume is not None:
            cfg_path = resume / "config.yaml"
            if not cfg_path.is_file():
                raise ConfigError(f"--resume {resume}: no config.yaml there; it is not a train-controller run dir.")
            cfg = load_controller_config(cfg_path, [])
            out = resume
        else:
            overrides = list(set_)
            for key, value in (("policy", policy), ("total_episodes", episodes), ("seed", seed),
                               ("vec_env", vec_env), ("ray.address", ray_address)):
                if value is not None:
                    overrides.append(f"{key}={value}")
            path = config if config.is_file() or config != Path("configs/train/default.yaml") else CONFIGS / "train" / "default.yaml"
            cfg = load_controller_config(path, overrides)
            out = out or Path("runs") / f"controller-{cfg.policy}-s{cfg.seed}"
        # Weights load only after every name and number above has been checked.
        from metactl.models import resolve_model
        from metactl.tasks import check_suite_name

        resolve_model(cfg.run.model)
        check_suite_name(cfg.run.suite)
    except MetactlError as exc:
        _fail(exc)

    from metactl.trainer import format_table, train_controller

    try:
        result = train_controller(cfg, out, resume=resume is not None, progress=not quiet)
    except MetactlError as exc:
        _fail(exc)
    typer.echo(f"\nheld-out task seeds {cfg.eval_task_seeds} (mean ± std over tasks), {result.episodes} episodes, {result.seconds:.0f}s:")
    echo_table(format_table(result.evaluation))
    typer.echo(f"wrote {out} (controller, schedule.yaml, scores.jsonl, eval.jsonl, tb/)")


@app.command()
def transfer(
    run_dir: Annotated[Path, typer.Argument(help="train-controller run dir (schedule.yaml, controller.zip), or a schedule YAML")],
    model: Annotated[str, typer.Option(help="target model: proxy-large, smollm2-135m, an HF folder or a hub id")],
    out: Annotated[Path | None, typer.Option(help="output dir (default runs/transfer-<model>-<mode>); rerun the same command to resume")] = None,
    mode: Annotated[str, typer.Option(help="schedule: replay the greedy schedule (open loop); policy: the controller picks each phase from the target's observations (closed loop)")] = "schedule",
    suite: Annotated[str | None, typer.Option(help="suite on the target (default: the preset's, else the source run's)")] = None,
    steps: Annotated[int | None, typer.Option(help="optimiser steps per run, the same for every method (default: the preset's, else the source run's)")] = None,
    task_seed: Annotated[list[int], typer.Option("--task-seed", help="task seed to compare on, repeatable (default 1000 1001 1002)")] = [],  # noqa: B006
    compare: Annotated[list[str], typer.Option(help="extra schedule to run beside learned and default, repeatable (e.g. expert)")] = [],  # noqa: B006
    merge: Annotated[bool, typer.Option(help="also save the learned model with its adapters merged (save_pretrained) under OUT/merged")] = False,
    config: Annotated[Path | None, typer.Option(help="transfer settings YAML (default configs/transfer/<model>.yaml when metactl ships one)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override KEY=VALUE, repeatable: --set run.tools.sft.lr=1e-4")] = [],  # noqa: B006
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Carry a controller's decisions from the proxy to a larger model, and compare with default.

    Adapters cannot move between models of different widths; the decisions can. A schedule names relative depth groups (layer l of L sits in group floor(l*G/L) of G), module kinds (attn, mlp, resolved from the target's own module names) and budget fractions, so it means the same on 4 or 30 layers. In policy mode the SB3 controller itself acts on the target, reading the target run's scores, norms and interference through the same observation encoding.

    Every method (learned, default, any --compare) runs on each task seed at the same step budget and episode seed through the same runner; the table shows every score part side by side and the learned - default delta. OUT holds config.yaml, results.jsonl, schedule.yaml, the learned run's peft adapters (adapters/<tool>) and, with --merge, the merged model (merged/).
    """
    from metactl.transfer import load_source, plan_transfer, preset_path, resolve_transfer_config

    try:
        if steps is not None and steps < 1:
            raise ConfigError(f"--steps: got {steps}; every method needs at least 1 optimiser step (allowed range [1, 10000000]).")
        overrides = [f"mode={mode}"]
        for key, value in (("run.suite", suite), ("run.training.total_steps", steps)):
            if value is not None:
                overrides.append(f"{key}={value}")
        if task_seed:
            overrides.append(f"task_seeds={list(task_seed)}")
        if compare:
            overrides.append(f"compare={['default', *compare]}")
        if merge:
            overrides.append("merge=true")
        source = load_source(run_dir, mode)
        preset = config or preset_path(model)
        cfg = resolve_transfer_config(source, model, preset, [*overrides, *set_])
        plan = plan_transfer(cfg, source)
    except MetactlError as exc:
        _fail(exc)
    from metactl.parallel import launched_as_main

    out = out or Path("runs") / f"transfer-{Path(model).name}-{cfg.mode}"
    quiet = quiet or not launched_as_main()  # one process of a parallel launch speaks for all
    if not quiet:
        if preset is not None:
            typer.echo(f"settings: {preset}", err=True)
        if plan.layers:
            typer.echo(f"layer map: {plan.layers}", err=True)

    from metactl.evaluation import format_comparison
    from metactl.io import atomic_write_text
    from metactl.transfer import LEARNED, run_transfer

    try:
        result = run_transfer(plan, out, progress=not quiet)
    except MetactlError as exc:
        _fail(exc)
    if not result.main:
        return
    rows = format_comparison(result.evaluation, LEARNED)
    procs = f", {result.processes} processes" if result.processes > 1 else ""
    head = (f"{cfg.run.model} on {cfg.run.suite}, task seeds {cfg.task_seeds}, {cfg.run.training.total_steps} steps, "
            f"{cfg.mode} mode from {run_dir} (mean ± std over tasks, {result.seconds:.0f}s{procs}):")
    typer.echo(f"\n{result.layers}\n{head}")
    echo_table(rows)
    atomic_write_text(out / "comparison.txt", f"{result.layers}\n{head}\n{table_text(rows)}\n")
    typer.echo(f"wrote {out} (results.jsonl, schedule.yaml, adapters/{', merged/' if result.merged else ''}, comparison.txt)")


@app.command()
def inspect(
    run_dir: Annotated[Path, typer.Argument(help="a train-controller run dir (its --out)")],
    task_seed: Annotated[int | None, typer.Option(help="task to inspect on (default: the run's first held-out task, the one schedule.yaml shows)")] = None,
    format_: Annotated[str, typer.Option("--format", help="table: print the tables; json: print report.json; html: also write one self-contained report.html")] = "table",
    out: Annotated[Path | None, typer.Option(help="output dir for report.json, the PNGs and report.html (default RUN_DIR/inspect/task-<seed>)")] = None,
    workers: Annotated[int, typer.Option(help="processes that retrain the schedule variants (phase ablations, reorderings, random baseline) beside the main one; 0 trains them in this process afterwards")] = 2,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Show what the controller decided, why, and what each tool did to the model.

    On one task the policy acts greedily (closed loop for ppo: each phase chosen from that episode's own observations) beside the default schedule, then: the decisions per phase, tool, layer group and module kind; the learning curve with default / expert / random as lines; exact Shapley values of every score part over tools and over layer groups (remove an adapter, or a group's share of all of them, and re-score) and each phase's training left out; the schedule retrained with phases swapped or a tool's phases merged; which observation features move each control; the gradient cosine between tools per layer group over training, CKA drift per layer, and each behaviour read out at every layer (inside the model, or only at the output?).
    """

    from metactl.inspection.report import FORMATS, render_terminal, write_report
    from metactl.inspection.run import inspect_run

    try:
        if format_ not in FORMATS:
            from metactl.errors import did_you_mean

            raise ConfigError(f"--format: {format_!r} is not one of {', '.join(FORMATS)}.{did_you_mean(format_, FORMATS)}")
        report = inspect_run(run_dir, task_seed=task_seed, out=out, workers=workers, progress=not quiet)
    except MetactlError as exc:
        _fail(exc)
    paths = write_report(report, Path(report["out"]), format_)
    if format_ == "json":
        typer.echo(paths["json"].read_text())
        return
    if format_ == "table":
        typer.echo(render_terminal(report))
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def sweep(
    config: Annotated[Path, typer.Option(help="sweep YAML (configs/sweep/: seeds.yaml, bench.yaml, ppo-tpe.yaml); every option is explained in it")] = Path("configs/sweep/seeds.yaml"),
    set_: Annotated[list[str], typer.Option("--set", help="override KEY=VALUE, repeatable: --set 'grid={seed: [0, 1, 2, 3]}' --set 'set=[total_episodes=16]'")] = [],  # noqa: B006
    out: Annotated[Path | None, typer.Option(help="sweep directory (default runs/sweep-<config name>)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue an interrupted sweep from its directory (its sweep.yaml wins)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="'auto' joins the cluster `ray start` made, HOST:PORT or ray://HOST:10001 another; unset starts a local Ray")] = None,
    quiet: Annotated[bool, typer.Option(help="no Tune progress output")] = False,
) -> None:
    """Run many train-controller trials on Ray Tune: a grid (controller seeds, policies) or an Optuna TPE search.

    Every trial is one train-controller run (same runner, same envs) with its own settings, scored on the sweep's task_seeds (validation tasks 2000-2004 by default, apart from the 1000-1004 of train-controller's table). A grid runs every combination of `grid` values (tune.grid_search); a search lets Optuna TPE (OptunaSearch behind a ConcurrencyLimiter) propose values for the keys of search.space, each under search.repeats controller seeds. Each trial reserves its envs (one placement-group bundle per env actor with vec_env: ray), so trials never oversubscribe a node.

    Needs pip install 'metactl[tune]'. The directory holds sweep.yaml, trials/<name>/ (each a resumable train-controller run dir), tune/ (Ray Tune's state), results.jsonl and summary.md; the table of settings (mean ± std over seeds, best first) is printed at the end. Kill it at any point and pass --resume DIR to continue: finished trials are not rerun.
    """
    from metactl.sweep import load_sweep_config, require_tune

    try:
        require_tune()
        if resume is not None:
            cfg_path = resume / "sweep.yaml"
            if not cfg_path.is_file():
                raise ConfigError(f"--resume {resume}: no sweep.yaml there; it is not a sweep dir.")
            # The cluster may differ from the one the sweep started on; everything else is the sweep's.
            cfg = load_sweep_config(cfg_path, [f"ray.address={ray_address}"] if ray_address is not None else [])
            out = resume
        else:
            overrides = list(set_) + ([f"ray.address={ray_address}"] if ray_address is not None else [])
            path = config if config.is_file() or config != Path("configs/sweep/seeds.yaml") else CONFIGS / "sweep" / "seeds.yaml"
            cfg = load_sweep_config(path, overrides)
            out = out or Path("runs") / f"sweep-{path.stem}"
    except MetactlError as exc:
        _fail(exc)

    from metactl.sweep import run_sweep

    try:
        result = run_sweep(cfg, out, resume=resume is not None, progress=not quiet)
    except MetactlError as exc:
        _fail(exc)
    typer.echo(f"\n{len(result.rows)} trials, task seeds {cfg.task_seeds} (mean ± std over each setting's trials, best by {cfg.metric} first), {result.seconds:.0f}s:")
    echo_table(result.table)
    if result.errors:
        typer.secho(f"{result.errors} trial(s) failed; their errors are under {result.out / 'tune'}. Rerun with --resume to retry them.", fg="yellow", err=True)
    typer.echo(f"wrote {result.out} (summary.md, results.jsonl, trials/, tune/)")


@app.command()
def policies() -> None:
    """List the controllers and baselines train-controller can run."""
    from policies import POLICIES

    for name, cls in POLICIES.items():
        typer.echo(f"{name:>8}  {cls.help}")


def print_score_table(rows: list[tuple[str, str, str, dict | None]]) -> None:
    """A plain aligned table: readable in any terminal width, and easy to grep or paste."""
    head = ["phase", "steps", "s", *SCORE_COLUMNS]
    body = [[phase, steps, secs, *(f"{scores[c]:.3f}" if scores else "" for c in SCORE_COLUMNS)]
            for phase, steps, secs, scores in rows]
    echo_table([head, *body])


def echo_table(rows: list[list[str]]) -> None:
    """Right-aligned columns, the first row the header."""
    typer.echo(table_text(rows))


def table_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in rows)


def main() -> None:
    try:
        app()
    except MetactlError as exc:  # pragma: no cover - commands catch their own
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
