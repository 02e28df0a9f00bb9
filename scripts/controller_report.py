"""The default ``metactl train-controller`` over several controller seeds, as the README reports it.

    python scripts/controller_report.py --seeds 0 1 2 3 4 --searches tuned-lr optuna --out docs/controller_results.md

Each seed runs ``train_controller`` with the built-in default config (the same function the CLI
calls) into ``RUNS/tc-s<seed>``; a finished run dir is read back instead of retrained (its wall
time is kept in ``RUNS/tc-s<seed>/wall_seconds.txt``). The fixed schedules of the config's
``compare`` do not depend on the controller seed: they are evaluated once, on the same (task,
episode seed) pairs, into ``RUNS/baselines/eval.jsonl`` and paired with every seed (each seed's run
keeps only ``averaged`` and ``enveloped``, which do depend on it). Each policy of ``--searches`` (e.g. ``tuned-lr``,
``optuna``) runs at the same episode budget and seed into ``RUNS/<policy>-s<seed>``. The report
holds, from those run dirs' ``eval.jsonl``, one section per evaluated suite (the training families'
held-out seeds, then each of ``eval_suites``, e.g. families the controller never saw):

- every method's held-out scores: each seed's mean over the (task, episode seed) pairs, then
  mean ± std over controller seeds (the fixed schedules see the same pairs on every seed);
- the learned policy minus each method, paired on the same (task, episode seed): mean ± std over
  controller seeds of each seed's mean difference, and the share of pairs the learned policy wins;
- the mean gain per task family, and per family and controller seed for the methods that depend on
  the seed;

and the wall time of each run. The whole file is written by this script; commentary about it lives
elsewhere (docs/controller.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Collection
from pathlib import Path

from metactl.commands.train_controller.config import resolve
from metactl.commands.train_controller.run import (
    MADE_FROM_POLICY,
    comparison_actors,
    evaluate_missing,
    evaluation_pairs,
    make_venv,
    train_controller,
)
from metactl.envs import PHASE_ENV_ID
from metactl.envs.jobs import Job
from metactl.envs.vector import run_jobs
from metactl.evaluation import Evaluation, finished_rows, row_gain
from metactl.policies.config import ControllerConfig
from metactl.rundir import EVAL, SCHEDULE, atomic_write_text, read_jsonl
from metactl.tables import mean_std, render_table

WALL = "wall_seconds.txt"
WIDENED = "widened_eval_seconds.txt"  # evaluation added to a finished run dir later
BASELINES = "baselines"


def run_seed(seed: int, runs: Path, overrides: list[str], policy: str = "ppo",
             compare: list[str] | None = None) -> tuple[Path, float]:
    out = runs / (f"tc-s{seed}" if policy == "ppo" else f"{policy}-s{seed}")
    extra = [f"policy={policy}"] + ([f"compare=[{','.join(compare)}]"] if compare is not None else [])
    cfg, out = resolve("default", [*overrides, *extra, f"seed={seed}"], None, out)
    if (out / SCHEDULE).is_file() and (out / WALL).is_file():
        t0 = time.perf_counter()
        if evaluate_missing(cfg, out):  # a wider evaluation than the run's own: only the new pairs run
            _add_seconds(out / WIDENED, time.perf_counter() - t0)
        return out, _seconds(out / WALL) + _seconds(out / WIDENED)
    t0 = time.perf_counter()
    train_controller(cfg, out, resume=(out / "config.yaml").is_file(), progress=True)
    wall = time.perf_counter() - t0
    atomic_write_text(out / WALL, f"{wall:.1f}\n")
    return out, wall


def run_baselines(out: Path, overrides: list[str]) -> tuple[list[dict], float]:
    """The config's fixed ``compare`` schedules on the evaluation pairs, once (they learn nothing, so
    every controller seed would get the same rows), batched on the population engine like the CLI's
    own evaluation."""
    cfg, _ = resolve("default", overrides, None, out)
    if (out / EVAL).is_file() and (out / WALL).is_file():
        have = {pair_key(r) for r in read_jsonl(out / EVAL)}
        missing = [p for p in evaluation_pairs(cfg) if (p[0] or cfg.run.suite, *p[1:]) not in have]
        if missing:  # a wider evaluation than the file's: only the new pairs run
            t0 = time.perf_counter()
            rows = _evaluate_fixed(cfg, missing)
            append = "".join(json.dumps(r) + "\n" for r in rows)
            atomic_write_text(out / EVAL, (out / EVAL).read_text() + append)
            _add_seconds(out / WIDENED, time.perf_counter() - t0)
        return read_jsonl(out / EVAL), _seconds(out / WALL) + _seconds(out / WIDENED)
    t0 = time.perf_counter()
    rows = _evaluate_fixed(cfg, evaluation_pairs(cfg))
    wall = time.perf_counter() - t0
    atomic_write_text(out / EVAL, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out / WALL, f"{wall:.1f}\n")
    return rows, wall


def shared_baselines(cfg: ControllerConfig, out: Path, overrides: list[str]) -> tuple[set, list[dict], float]:
    """The report's (suite, task seed, episode seed) pairs, the fixed schedules' rows on exactly those
    and the wall time they took. Run dirs and the shared baselines may hold more pairs than asked for
    (a wider evaluation made for another report): every method is read on exactly these."""
    wanted = {(suite or cfg.run.suite, ts, e) for suite, ts, e in evaluation_pairs(cfg)}
    baselines, wall = run_baselines(out, overrides)
    return wanted, [r for r in baselines if pair_key(r) in wanted], wall


def add_seed_rows(by_suite: dict[str | None, dict[int, list[dict]]], seed: int, rows: list[dict],
                  baselines: list[dict], wanted: set) -> None:
    """File one controller seed's run-dir rows on the wanted pairs, and the shared fixed-schedule rows,
    under their suite. A run dir made with the fixed schedules in its own compare list: the shared rows
    stand for them."""
    fixed = {r["label"] for r in baselines}
    for r in [r for r in rows if r["label"] not in fixed and pair_key(r) in wanted] + baselines:
        by_suite.setdefault(r.get("suite"), {}).setdefault(seed, []).append(r)


def _evaluate_fixed(cfg: ControllerConfig, pairs: list[tuple[str | None, int, int]]) -> list[dict]:
    """The config's fixed ``compare`` schedules on ``pairs`` (suite None: run.suite), batched on the
    population engine like the CLI's own evaluation."""
    venv = make_venv(cfg, PHASE_ENV_ID)
    try:
        jobs = [Job(ts, e, schedule=s, label=name, suite=suite)
                for suite, ts, e in pairs for name, s in comparison_actors(cfg).items()]
        rows = run_jobs(venv, jobs)
    finally:
        venv.close()
    return [{k: v for k, v in r.items() if k != "schedule"} for r in rows]


def _seconds(path: Path) -> float:
    return float(path.read_text()) if path.is_file() else 0.0


def _add_seconds(path: Path, seconds: float) -> None:
    atomic_write_text(path, f"{_seconds(path) + seconds:.1f}\n")


def pair_key(row: dict) -> tuple:
    return row.get("suite"), row["task_seed"], row.get("episode_seed", 0)


def suite_section(suite: str | None, by_seed: dict[int, list[dict]], policy: str, fixed: Collection[str] = ()) -> str:
    """Tables for one evaluated suite from each controller seed's rows of it. ``fixed``: the labels of the
    fixed schedules (the same rows on every seed); the per-seed tables show every other label. Without it a
    label counts as seed-dependent where its means differ between seeds, which a one-seed report never
    shows (its per-seed tables came out empty)."""
    all_rows = [r for rows in by_seed.values() for r in rows]
    parts = Evaluation(all_rows).parts
    labels = list(dict.fromkeys(r["label"] for r in all_rows))
    # A diverged run has no scores: the parts average the runs that finished, the gain counts it at
    # -penalty (row_gain), and a column says how many there were.
    diverged = len(finished_rows(all_rows)) < len(all_rows)
    scores = [["method", *parts, "gain over base", *(["diverged runs"] if diverged else [])]]
    for label in labels:
        per_seed, n_diverged, n_rows = [], 0, 0
        for rows in by_seed.values():
            mine = [r for r in rows if r["label"] == label]
            scored = finished_rows(mine)
            n_diverged, n_rows = n_diverged + len(mine) - len(scored), n_rows + len(mine)
            per_seed.append({p: statistics.mean(r["scores"][p] for r in scored) if scored else float("nan")
                             for p in parts} | {"gain": statistics.mean(row_gain(r) for r in mine)})
        scores.append([label, *(mean_std([s[p] for s in per_seed]) for p in parts),
                       mean_std([s["gain"] for s in per_seed], signed=True),
                       *([f"{n_diverged}/{n_rows}"] if diverged else [])])
    paired = [["method", f"{policy} - method (mean ± std over controller seeds)", f"{policy} wins", "pairs"]]
    for label in labels:
        if label == policy:
            continue
        diffs, wins, n = [], 0, 0
        for rows in by_seed.values():
            mine = {pair_key(r): row_gain(r) for r in rows if r["label"] == policy}
            theirs = {pair_key(r): row_gain(r) for r in rows if r["label"] == label}
            common = sorted(set(mine) & set(theirs))
            d = [mine[k] - theirs[k] for k in common]
            diffs.append(statistics.mean(d))
            wins += sum(x > 0 for x in d)
            n += len(d)
        paired.append([label, mean_std(diffs, signed=True), f"{wins}/{n} ({wins / n:.0%})", str(n)])
    # Methods that depend on the controller seed (the learned policy, averaged, searches): per seed.
    seeds = [["method", *(f"seed {s}" for s in by_seed)]]
    for label in labels:
        means = [statistics.mean([row_gain(r) for r in rows if r["label"] == label] or [float("nan")])
                 for rows in by_seed.values()]
        if (label not in fixed) if fixed else len({round(m, 9) for m in means}) > 1:
            seeds.append([label, *(f"{m:+.3f}" for m in means)])
    families = list(dict.fromkeys(r.get("family", "?") for r in all_rows))

    def family_gain(rows: list[dict], label: str, family: str) -> str:
        g = [row_gain(r) for r in rows if r["label"] == label and r.get("family", "?") == family]
        return f"{statistics.mean(g):+.3f}" if g else "-"

    fam = [["method", *families]] + [[label, *(family_gain(all_rows, label, f) for f in families)] for label in labels]
    # Where a seed-dependent method's spread comes from: one family on a few seeds, or everywhere.
    seed_fam = [["method", "family", *(f"seed {s}" for s in by_seed)]] + [
        [label, f, *(family_gain(rows, label, f) for rows in by_seed.values())]
        for label in [row[0] for row in seeds[1:]] for f in families
    ]
    tasks = sorted({r["task_seed"] for r in all_rows})
    episodes = sorted({r.get("episode_seed", 0) for r in all_rows})
    title = suite or "run suite"
    return (
        f"## {title}\n\nTask seeds {tasks}, episode seeds {episodes} on each (the same pairs for every method).\n\n"
        "Held-out scores, each controller seed's mean over the pairs, then mean ± std over controller seeds:\n\n"
        + render_table(scores, "markdown")
        + f"\n\nPaired on the same (task, episode seed): {policy} minus each method.\n\n"
        + render_table(paired, "markdown")
        + "\n\nMean gain over base of each controller seed (the spread the ± above summarises):\n\n"
        + render_table(seeds, "markdown")
        + "\n\nMean gain over base per task family (over controller seeds, tasks and episode seeds):\n\n"
        + render_table(fam, "markdown")
        + ("\n\nMean gain over base per task family and controller seed (the methods that depend on the seed):\n\n"
           + render_table(seed_fam, "markdown") if len(seed_fam) > 1 else "") + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--baselines", type=Path, default=None,
                    help="where the fixed schedules' rows are kept (default RUNS/baselines); several reports with "
                    "the same evaluation settings may share it")
    ap.add_argument("--searches", nargs="*", default=[],
                    help="search policies run per seed at the same episode budget (tuned-lr, optuna, random)")
    ap.add_argument("--out", type=Path, default=Path("docs/controller_results.md"))
    args = ap.parse_args()

    cfg, _ = resolve("default", args.overrides, None, args.runs)
    per_seed = [n for n in MADE_FROM_POLICY if n in cfg.compare]
    wanted, baselines, baseline_wall = shared_baselines(cfg, args.baselines or args.runs / BASELINES, args.overrides)
    walls: list[list[str]] = []
    by_suite: dict[str | None, dict[int, list[dict]]] = {}
    policy = "ppo"
    for seed in args.seeds:
        rows = []
        out, wall = run_seed(seed, args.runs, args.overrides, compare=per_seed)
        walls.append([str(seed), "ppo", f"{wall:.0f} s ({wall / 60:.1f} min)"])
        rows += read_jsonl(out / EVAL, appended=True)
        for search in args.searches:
            out, wall = run_seed(seed, args.runs, args.overrides, policy=search, compare=[])
            walls.append([str(seed), search, f"{wall:.0f} s ({wall / 60:.1f} min)"])
            rows += read_jsonl(out / EVAL, appended=True)
        add_seed_rows(by_suite, seed, rows, baselines, wanted)
    runs = [["controller seed", "policy", "wall time (training + evaluation)"], *walls]
    runs.append(["-", "fixed schedules " + ", ".join(n for n in cfg.compare if n not in MADE_FROM_POLICY),
                 f"{baseline_wall:.0f} s ({baseline_wall / 60:.1f} min), once for all seeds"])
    cmd = f"python scripts/controller_report.py --seeds {' '.join(map(str, args.seeds))}" + (
        f" --searches {' '.join(args.searches)}" if args.searches else ""
    ) + (f" --set {' '.join(args.overrides)}" if args.overrides else "") + (
        f" --runs {args.runs}" if args.runs != Path("runs") else "") + (
        f" --baselines {args.baselines}" if args.baselines else "") + f" --out {args.out}"
    text = (
        "# The default `metactl train-controller`, over controller seeds\n\n"
        f"<!-- Written by `{cmd}`; do not edit by hand (commentary: docs/controller.md). -->\n\n"
        f"Made by `{cmd}`: the built-in default config (`configs/train/default.yaml`)"
        + (" with the `--set` overrides above" if args.overrides else "") + f", controller seeds "
        f"{args.seeds}. The controller observes only the observe split (training-distribution probes no "
        "reported score uses) and nothing that names its task family.\n\n"
        + "\n".join(suite_section(suite, by_seed, policy, fixed={r["label"] for r in baselines})
                    for suite, by_seed in by_suite.items())
        + f"\n{', '.join(args.searches) or 'No search'} ran at the controller's episode budget "
        f"({cfg.total_episodes} episodes) with the same seed. Wall time per run, on this machine (2 CPU cores); "
        "the default command alone is one ppo run plus the fixed schedules' evaluation:\n\n"
        + render_table(runs, "markdown") + "\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
