"""Learned controllers vs search baselines on the same episode budget and the same held-out tasks.

    python scripts/bench_controller.py --policies ppo bandit random optuna --seeds 0 1 2 \\
        --episodes 32 --out docs/bench_controller.md
    python scripts/bench_controller.py --tune [--ray-address auto] ...   # the same grid as parallel Ray Tune trials

Every method is trained by the same ``train_controller`` as the CLI (same envs, same runner,
same task draws per seed) and judged on the same held-out task seeds; the default and expert
schedules are run once on those tasks for reference. For each method and seed the held-out
scores are averaged over tasks; the table shows mean ± std of those averages over seeds, and
the wall time of a whole run (training + its evaluation).

With ``--tune`` the policies x seeds grid runs as ``metactl sweep`` trials (Ray Tune, as many at
once as the machine or cluster fits; each trial is the same ``train_controller`` run), then the
same table is made from the trials' scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from metactl.commands.train_controller.run import comparison_actors, evaluate, make_venv, train_controller
from metactl.envs import BANDIT_ENV_ID
from metactl.evaluation import finished_rows, row_gain
from metactl.paths import resolve_config_path
from metactl.policies.config import load_controller_config
from metactl.score_parts import reported_parts
from metactl.tables import mean_std, render_table

COLUMNS = ["target/style", "target/truth", "heldout/style", "heldout/truth", "stability", "composite"]


def per_seed_means(rows: list[dict]) -> dict[str, float]:
    scored = finished_rows(rows)  # a diverged run has no scores, its gain is -penalty
    out = {k: statistics.mean(r["scores"][k] for r in scored) for k in reported_parts(scored[0]["scores"])}
    out["gain"] = statistics.mean(row_gain(r) for r in rows)
    return out


def tuned(args, base_cfg, runs_root: Path) -> tuple[dict, dict, dict]:
    """The policies x seeds grid as one sweep; per-policy, per-seed means from the trials."""
    from metactl.commands.sweep.config import load_sweep_config
    from metactl.commands.sweep.run import run_sweep

    sets = [*args.overrides, f"total_episodes={args.episodes}"]
    sweep = load_sweep_config(
        None,
        [
            f"base={args.config}",
            f"set={json.dumps(sets)}",
            f"grid={json.dumps({'policy': args.policies, 'seed': args.seeds})}",
            f"task_seeds={base_cfg.eval_task_seeds}",
            *([f"ray.address={args.ray_address}"] if args.ray_address else []),
        ],
    )
    res = run_sweep(sweep, runs_root / "sweep", resume=(runs_root / "sweep" / "sweep.yaml").is_file())
    per: dict[str, list[dict]] = {}
    walls: dict[str, list[float]] = {}
    episodes_used: dict[str, int] = {}
    for row in sorted(res.rows, key=lambda r: (args.policies.index(r["params"]["policy"]), r["seed"])):
        policy, m = row["params"]["policy"], row["metrics"]
        per.setdefault(policy, []).append({k: m[k] for k in (*reported_parts(m), "gain")})
        walls.setdefault(policy, []).append(m["seconds"])
        episodes_used[policy] = m["episodes"]
    return per, walls, episodes_used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", nargs="+", default=["ppo", "bandit", "random", "optuna"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--episodes", type=int, default=32, help="proxy episodes per method and seed")
    ap.add_argument("--config", type=Path, default=resolve_config_path("train", "default"))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--runs", type=Path, default=None, help="keep run dirs here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    ap.add_argument(
        "--tune", action="store_true", help="run the grid as Ray Tune trials (metactl sweep; needs metactl[tune])"
    )
    ap.add_argument(
        "--ray-address",
        default=None,
        help="with --tune: 'auto' or HOST:PORT of a Ray cluster (default: a local instance)",
    )
    args = ap.parse_args()

    runs_root = args.runs or Path(tempfile.mkdtemp(prefix="bench_controller_"))
    base_cfg = load_controller_config(args.config, [*args.overrides, f"total_episodes={args.episodes}", "compare=[]"])
    t_start = time.time()
    per: dict[str, list[dict]] = {}
    walls: dict[str, list[float]] = {}
    episodes_used: dict[str, int] = {}
    if args.tune:
        per, walls, episodes_used = tuned(args, base_cfg, runs_root)
    for policy in args.policies if not args.tune else []:
        for seed in args.seeds:
            cfg = load_controller_config(
                args.config,
                [*args.overrides, f"total_episodes={args.episodes}", "compare=[]", f"policy={policy}", f"seed={seed}"],
            )
            out = runs_root / f"{policy}-s{seed}"
            t0 = time.time()
            res = train_controller(cfg, out, resume=(out / "config.yaml").is_file(), progress=True)
            walls.setdefault(policy, []).append(time.time() - t0)
            episodes_used[policy] = res.episodes
            rows = [r for r in res.evaluation.rows if r["label"] == policy]
            per.setdefault(policy, []).append(per_seed_means(rows))
            print(
                f"{policy} seed {seed}: gain {per[policy][-1]['gain']:+.3f} "
                f"composite {per[policy][-1]['composite']:.3f} ({walls[policy][-1]:.0f}s)",
                flush=True,
            )

    # The fixed schedules are deterministic given the task and episode seed: run them once.
    venv = make_venv(base_cfg, BANDIT_ENV_ID)
    try:
        ref, _ = evaluate(
            base_cfg, venv, comparison_actors(load_controller_config(args.config, ["compare=[default,expert]"]))
        )
    finally:
        venv.close()
    for label, rows in ref.by_label().items():
        per[label] = [per_seed_means(rows)]
    default_gain = per["default"][0]["gain"]

    rows = [["method", *COLUMNS, "gain over base", "x default gain", "episodes", "wall time per run"]]
    for label, seeds in per.items():
        cells = [mean_std([s[c] for s in seeds]) for c in COLUMNS]
        gains = [s["gain"] for s in seeds]
        ratio = statistics.mean(gains) / default_gain if default_gain > 0 else float("nan")
        wall = f"{statistics.mean(walls[label]):.0f} s" if label in walls else "-"
        eps = str(episodes_used.get(label, "-"))
        rows.append([label, *cells, mean_std(gains, signed=True), f"{ratio:.2f}x", eps, wall])
    table = render_table(rows, "markdown")
    print(table)
    if args.out:
        cmd = (
            f"python scripts/bench_controller.py --policies {' '.join(args.policies)} "
            f"--seeds {' '.join(map(str, args.seeds))} --episodes {args.episodes}"
            + (f" --set {' '.join(args.overrides)}" if args.overrides else "")
            + (" --tune" if args.tune else "")
        )
        text = (
            "# Controllers vs search baselines (same episode budget, same held-out tasks)\n\n"
            f"Made by `{cmd}` in {time.time() - t_start:.0f} s on this machine (2 CPU cores, `n_envs=2`).\n\n"
            f"Held-out task seeds {base_cfg.eval_task_seeds}; "
            f"mean ± std over controller seeds {args.seeds} of each seed's "
            "mean over the held-out tasks (default and expert are deterministic: one run, std over nothing).\n\n"
            + table
            + "\n\n<!-- raw -->\n```json\n"
            + json.dumps({k: v for k, v in per.items()}, indent=1)
            + "\n```\n"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
