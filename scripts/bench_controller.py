"""Every learner and every fixed baseline at the default's episode budget, on the same held-out pairs.

    python scripts/bench_controller.py --seeds 0 1 2 3 4 --set eval_episodes=3 \\
        eval_task_seeds=[1000,1001,1002,1003,1004,1005] --runs runs/bench --out docs/bench_controller.md
    python scripts/bench_controller.py --tune [--ray-address auto] ...   # the learners x seeds grid as Ray Tune trials

Learners (``--learners``): ``ppo`` (the default ``metactl train-controller``, closed loop), ``bandit``
(PPO on whole schedules, open loop), ``random`` and ``optuna`` (searches over the same share-only
action space, scored on the same training tasks) and ``tuned-lr`` (the default schedule with each
tool's learning rate searched by Optuna); each is trained by the same ``train_controller`` as the
CLI, with the built-in default config, the same ``--set`` overrides, seed and episode budget, into
``RUNS/tc-s<seed>`` (ppo) or ``RUNS/<learner>-s<seed>``, the directories
``scripts/controller_report.py`` uses: a report's runs directory can be passed as ``--runs`` and
its finished runs are read back, not retrained (a finished run evaluated on fewer pairs than asked
for runs only the missing pairs). The config's fixed ``compare`` schedules (``default``, ``expert``,
the published hand rules ``alright`` and ``maxright``, ``mix``) run once into ``RUNS/baselines``;
``averaged`` (each ppo seed's phase controls averaged into one fixed schedule) and, when ``compare``
lists it, ``enveloped`` (that seed's closed loop kept inside its training envelope) run with its seed
(not under ``--tune``, whose trials keep their own evaluation).

The report has one section per evaluated suite (the training families' held-out task seeds, then
each of ``eval_suites``, e.g. the families no learner trained on), each with the tables of
``controller_report.py`` (scores, ppo minus each method paired on the same (task, episode seed),
per seed, per family) and one more: per task, ppo's mean gain minus each method's over every
controller seed and episode seed of that task, and on how many tasks ppo is ahead. Then each
learner's wall time per run.

``--variant LABEL=RUNS_DIR`` adds the same ppo trained with other settings (e.g. more tools in its
action space), read from ``RUNS_DIR/tc-s<seed>`` (made by ``controller_report.py --runs RUNS_DIR``;
nothing is trained here): per suite, each seed's mean gain of the variant minus the default ppo's on
the same pairs, with the 95% t interval over seeds, the pairs it wins, and its wall time.

With ``--tune`` the learners x seeds grid runs as ``metactl sweep`` trials (Ray Tune, as many at
once as the machine or cluster fits; each trial is the same ``train_controller`` run). Sweeps score
trials on the training families only (``eval_suites=[]``: a sweep must not tune on held-out
families), so each finished trial's run dir is then evaluated on the pairs it lacks, as above.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controller_report import BASELINES, add_seed_rows, pair_key, run_seed, shared_baselines, suite_section

from metactl.commands.train_controller.config import resolve
from metactl.commands.train_controller.run import MADE_FROM_POLICY, evaluate_missing
from metactl.evaluation import row_gain
from metactl.paths import resolve_config_path
from metactl.rundir import EVAL, atomic_write_text, read_jsonl
from metactl.tables import mean_std, render_table, t_interval

LEARNERS = ["ppo", "bandit", "random", "optuna", "tuned-lr"]


def per_task_wins(by_seed: dict[int, list[dict]], policy: str) -> str:
    """Per task: ``policy``'s mean gain minus each method's, over controller seeds and episode seeds
    (the same pairs for both), and the count of tasks where ``policy`` is ahead."""
    rows = [r for seed_rows in by_seed.values() for r in seed_rows]
    labels = [lb for lb in dict.fromkeys(r["label"] for r in rows) if lb != policy]
    tasks = sorted({(r.get("family", "?"), r["task_seed"]) for r in rows})
    # Each row's gain, indexed once: (label, family, task) -> {(controller seed, pair): gain}.
    gains: dict[tuple, dict[tuple, float]] = {}
    for seed, seed_rows in by_seed.items():
        for r in seed_rows:
            gains.setdefault((r["label"], r.get("family", "?"), r["task_seed"]), {})[seed, pair_key(r)] = row_gain(r)
    table = [["method", *(f"{t} ({f})" for f, t in tasks), f"tasks {policy} is ahead"]]
    for label in labels:
        cells, ahead, counted = [], 0, 0
        for family, task in tasks:
            mine, theirs = gains.get((policy, family, task), {}), gains.get((label, family, task), {})
            diffs = [mine[k] - theirs[k] for k in sorted(set(mine) & set(theirs))]
            if not diffs:
                cells.append("-")
                continue
            d = statistics.mean(diffs)
            cells.append(f"{d:+.3f}")
            ahead, counted = ahead + (d > 1e-9), counted + 1  # a float tie is not a win
        table.append([label, *cells, f"{ahead}/{counted}"])
    return render_table(table, "markdown")


def variant_section(label: str, runs: Path, by_suite: dict[str | None, dict[int, list[dict]]], wanted: set) -> str:
    """The default ppo against ``label`` (ppo trained into ``runs/tc-s<seed>``), paired by controller seed
    and by (task, episode seed) within it, per evaluated suite; only seeds both have."""
    walls = {}
    rows_by_seed: dict[int, list[dict]] = {}
    seeds = sorted({s for by_seed in by_suite.values() for s in by_seed})
    for seed in seeds:
        run = runs / f"tc-s{seed}"
        if (run / EVAL).is_file() and (run / "wall_seconds.txt").is_file():
            rows_by_seed[seed] = [r for r in read_jsonl(run / EVAL, appended=True)
                                  if r["label"] == "ppo" and pair_key(r) in wanted]
            walls[seed] = float((run / "wall_seconds.txt").read_text())
    if not rows_by_seed:
        raise SystemExit(f"--variant {label}={runs}: no finished run dir tc-s<seed> there for seeds {seeds}")
    lines = [f"## Variant `{label}` against the default ppo", "",
             (f"ppo trained with other settings, run dirs `{runs}/tc-s<seed>` (settings in each run's `config.yaml`), "
              f"controller seeds {sorted(rows_by_seed)}: each seed's mean gain over base on a suite's pairs, the "
              "variant minus the default ppo of the same seed on the same (task, episode seed) pairs; 95% t "
              "interval over seeds."), ""]
    table = [["suite", "default ppo", label, f"{label} - ppo", "95% interval", "pairs won"]]
    for suite, by_seed in by_suite.items():
        base_gain, var_gain, diffs, won, pairs = [], [], [], 0, 0
        for seed, var_rows in rows_by_seed.items():
            mine = {pair_key(r): row_gain(r) for r in by_seed.get(seed, []) if r["label"] == "ppo"}
            theirs = {pair_key(r): row_gain(r) for r in var_rows if r.get("suite") == suite}
            shared = sorted(set(mine) & set(theirs))
            if not shared:
                continue
            b = statistics.mean(mine[k] for k in shared)
            v = statistics.mean(theirs[k] for k in shared)
            base_gain.append(b)
            var_gain.append(v)
            diffs.append(v - b)
            won += sum(theirs[k] > mine[k] + 1e-9 for k in shared)
            pairs += len(shared)
        if not diffs:
            continue
        m, half = t_interval(diffs)
        table.append([str(suite), mean_std(base_gain, signed=True), mean_std(var_gain, signed=True),
                      mean_std(diffs, signed=True), f"[{m - half:+.3f}, {m + half:+.3f}]", f"{won}/{pairs}"])
    wall = statistics.mean(walls.values())
    lines += [render_table(table, "markdown"), "",
              (f"Wall time of `{label}` per run (training + evaluation), mean over seeds: {wall:.0f} s "
               f"({wall / 60:.1f} min)."), ""]
    return "\n".join(lines)


def tuned_runs(args, cfg) -> dict[tuple[str, int], Path]:
    """The learners x seeds grid as one sweep; each (learner, seed)'s trial run dir."""
    from metactl.commands.sweep.config import load_sweep_config
    from metactl.commands.sweep.run import run_sweep, trial_name

    sweep = load_sweep_config(
        resolve_config_path("sweep", "bench"),
        [
            f"set={json.dumps(args.overrides)}",
            f"grid={json.dumps({'policy': args.learners, 'seed': args.seeds})}",
            f"task_seeds={cfg.eval_task_seeds}",
            *([f"ray.address={args.ray_address}"] if args.ray_address else []),
        ],
    )
    root = args.runs / "sweep"
    run_sweep(sweep, root, resume=(root / "sweep.yaml").is_file())
    return {(p, s): root / "trials" / trial_name({"policy": p, "seed": s}) for p in args.learners for s in args.seeds}


def trial_rows(trial: Path, seed: int, learner: str, overrides: list[str]) -> tuple[list[dict], float]:
    """A sweep trial's rows on the bench's pairs (the ones the sweep did not score run now) and its wall time."""
    cfg, _ = resolve("default", [*overrides, f"policy={learner}", f"seed={seed}", "compare=[]"], None, trial)
    t0 = time.perf_counter()
    evaluate_missing(cfg, trial)
    done = json.loads((trial / "trial.json").read_text())
    return read_jsonl(trial / EVAL, appended=True), done["metrics"]["seconds"] + time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learners", nargs="+", default=LEARNERS, help=f"learners trained per seed (default {LEARNERS})")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench"),
                    help="run dirs (a controller_report.py runs dir works)")
    ap.add_argument("--baselines", type=Path, default=None, help="the fixed schedules' rows (default RUNS/baselines)")
    ap.add_argument("--out", type=Path, default=Path("docs/bench_controller.md"))
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=RUNS_DIR",
                    help="ppo trained with other settings, read from RUNS_DIR/tc-s<seed>, paired with the default ppo")
    ap.add_argument("--tune", action="store_true",
                    help="run the grid as Ray Tune trials (metactl sweep; needs metactl[tune])")
    ap.add_argument("--ray-address", default=None, help="with --tune: 'auto' or HOST:PORT (default: a local instance)")
    args = ap.parse_args()
    if "ppo" not in args.learners:
        ap.error("--learners must include ppo: every table pairs the other methods with it")

    cfg, _ = resolve("default", args.overrides, None, args.runs)
    wanted, baselines, baseline_wall = shared_baselines(cfg, args.baselines or args.runs / BASELINES, args.overrides)
    trials = tuned_runs(args, cfg) if args.tune else {}
    walls: dict[str, list[float]] = {}
    by_suite: dict[str | None, dict[int, list[dict]]] = {}
    for seed in args.seeds:
        rows: list[dict] = []
        for learner in args.learners:
            if args.tune:
                mine, wall = trial_rows(trials[learner, seed], seed, learner, args.overrides)
            else:
                compare = [n for n in MADE_FROM_POLICY if n in cfg.compare] if learner == "ppo" else []
                out, wall = run_seed(seed, args.runs, args.overrides, policy=learner, compare=compare)
                mine = read_jsonl(out / EVAL, appended=True)
            walls.setdefault(learner, []).append(wall)
            rows += mine
        add_seed_rows(by_suite, seed, rows, baselines, wanted)

    wall_table = [["learner", "episodes", "wall time per run (training + evaluation), mean over seeds"]]
    for learner, w in walls.items():
        mean = statistics.mean(w)
        wall_table.append([learner, str(cfg.total_episodes), f"{mean:.0f} s ({mean / 60:.1f} min)"])
    wall_table.append(
        ["fixed schedules", "-", f"{baseline_wall:.0f} s ({baseline_wall / 60:.1f} min), once for all seeds"]
    )
    cmd = (
        f"python scripts/bench_controller.py --seeds {' '.join(map(str, args.seeds))}"
        + (f" --learners {' '.join(args.learners)}" if args.learners != LEARNERS else "")
        + (f" --set {' '.join(args.overrides)}" if args.overrides else "")
        + f" --runs {args.runs}" + (f" --baselines {args.baselines}" if args.baselines else "")
        + (" --tune" if args.tune else "") + "".join(f" --variant {v}" for v in args.variant) + f" --out {args.out}"
    )
    sections = []
    for suite, by_seed in by_suite.items():
        sections.append(
            suite_section(suite, by_seed, "ppo", fixed={r["label"] for r in baselines})
            + "\nPer task (mean over controller seeds and episode seeds of ppo's gain minus the method's):\n\n"
            + per_task_wins(by_seed, "ppo") + "\n"
        )
    text = (
        "# Every learner and baseline at the same episode budget, on the same held-out pairs\n\n"
        f"<!-- Written by `{cmd}`; do not edit by hand (commentary: docs/controller.md). -->\n\n"
        f"Made by `{cmd}`: the built-in default config (`configs/train/default.yaml`)"
        + (" with the `--set` overrides above" if args.overrides else "")
        + f"; learners {', '.join(args.learners)}, {cfg.total_episodes} episodes each, controller seeds {args.seeds}; "
        f"fixed schedules {', '.join(n for n in cfg.compare)}. No learner observes or trains on the held-out "
        "task seeds or the held-out families.\n\n"
        + "\n".join(sections)
        + "".join("\n" + variant_section(*v.split("=", 1)[:1], Path(v.split("=", 1)[1]), by_suite, wanted)
                  for v in args.variant)
        + "\nWall time on this machine (2 CPU cores):\n\n" + render_table(wall_table, "markdown") + "\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
