"""Does the proxy rank schedules the way the target model does? (The assumption RegMix relies on.)

    python scripts/rank_agreement.py --run runs/controller-ppo-s0 --family sycophancy \\
        --models proxy-tiny proxy-large smollm2-135m --task-seeds 1000 1001 1002 \\
        --smollm2-task-seeds 1000 --out docs/rank_agreement.md

The same fixed schedules run on every model, on the family's own suite (the proxies) or its
English counterpart (SmolLM2, which cannot read the proxy language): `default`, `expert`, the
published hand rules `alright` and `maxright`, `mix`, the controller's greedy schedule
(`learned`, the run's `schedule.yaml`) and two schedules drawn uniformly from the search space
(`random-0`, `random-1`, fixed seeds). Each model's runs go through ``metactl transfer`` in
schedule mode (the target's preset from ``configs/transfer/``, the same runner as everything
else), so they resume after an interruption and every row is in
``RUNS/<model>/results.jsonl``.

Per model the schedules are ranked by their mean composite gain over the base on the model's
task seeds; the report gives the Spearman correlation of those ranks between every pair of
models, whether the proxy's best schedule is the target's best, and what the proxy's pick costs
on the target against the target's own best (regret).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metactl.commands.transfer.config import plan_from_cli
from metactl.commands.transfer.run import run_transfer
from metactl.commands.transfer.source import load_source
from metactl.envs.spaces import TRAIN_BASE, ScheduleSpace
from metactl.rundir import atomic_write_text, read_jsonl
from metactl.tables import render_table

FIXED = ["default", "expert", "alright", "maxright", "mix"]
RANDOM = 2  # random schedules, seeds 0 .. RANDOM-1
ENGLISH = {"style-vs-truth": "style-vs-truth-en", "sycophancy": "sycophancy-en"}  # SmolLM2's suites
PROXIES = {"proxy-tiny", "proxy-large"}


def suite_for(model: str, family: str) -> str:
    if model in PROXIES:
        return family
    if family not in ENGLISH:
        raise SystemExit(f"--family {family!r} has no English counterpart for {model}; one of {sorted(ENGLISH)}")
    return ENGLISH[family]


def random_schedules(
    work: Path, tools: tuple[str, ...], groups: int, phases: int, train_range: float = TRAIN_BASE
) -> list[Path]:
    """Uniform draws from the search space (the bandit's and the searches', with the source run's
    ``env.train_range``), saved so every model runs the same ones."""
    space = ScheduleSpace(tools, groups, phases, train_range=train_range)
    paths = []
    for i in range(RANDOM):
        path = work / f"random-{i}.yaml"
        if not path.is_file():
            action = np.random.default_rng(i).uniform(-1.0, 1.0, space.dim)
            space.schedule(action, name=f"random-{i}").save(path)
        paths.append(path)
    return paths


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho with average ranks for ties."""
    def ranks(x: list[float]) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in set(x):  # ties share their mean rank
            idx = [i for i, y in enumerate(x) if y == v]
            r[idx] = r[idx].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def label_of(label: str) -> str:
    return Path(label).stem if label.endswith(".yaml") else label


def run_model(model: str, args: argparse.Namespace, randoms: list[Path]) -> dict:
    seeds = args.smollm2_task_seeds if model not in PROXIES and args.smollm2_task_seeds else args.task_seeds
    suite = suite_for(model, args.family)
    out = args.runs / model
    compare = [*FIXED[1:], *(str(p) for p in randoms)]  # transfer runs `default` (FIXED[0]) always
    plan = plan_from_cli(args.run, model, "schedule", suite=suite, task_seeds=seeds, compare=compare,
                         overrides=[f"run.training.seed={args.seed}"])
    print(f"== {model} on {suite}, task seeds {seeds}", flush=True)
    run_transfer(plan, out)
    rows = read_jsonl(out / "results.jsonl", appended=True)
    gains: dict[str, list[float]] = {}
    for r in rows:
        gains.setdefault(label_of(r["label"]), []).append(r["scores"]["composite"] - r["base"]["composite"])
    return {"model": model, "suite": suite, "seeds": seeds, "gains": gains,
            "seconds": sum(r["seconds"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="train-controller run dir (its schedule.yaml is 'learned')")
    ap.add_argument("--family", default="sycophancy", choices=sorted(ENGLISH), help="proxy task family")
    ap.add_argument("--models", nargs="+", default=["proxy-tiny", "proxy-large", "smollm2-135m"])
    ap.add_argument("--task-seeds", nargs="+", type=int, default=[1000, 1001, 1002])
    ap.add_argument("--smollm2-task-seeds", nargs="*", type=int, default=None,
                    help="fewer task seeds for SmolLM2 (each of its runs is ~3 min on 2 CPU cores)")
    ap.add_argument("--seed", type=int, default=0, help="episode seed (adapter init, batches), the same everywhere")
    ap.add_argument("--runs", type=Path, default=REPO / "runs" / "rank")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "rank_agreement.md")
    args = ap.parse_args()
    args.runs = args.runs / args.family
    args.runs.mkdir(parents=True, exist_ok=True)

    source = load_source(args.run, "schedule")
    learned = source.schedule  # the random draws share its tools, groups, phases and action range
    train_range = source.env.train_range if source.env else TRAIN_BASE
    randoms = random_schedules(
        args.runs, tuple(learned.tool_names), learned.layer_groups, len(learned.phases), train_range
    )
    results = [run_model(m, args, randoms) for m in args.models]
    labels = list(results[0]["gains"])

    table = [["schedule", *(f"{r['model']} ({r['suite']})" for r in results)]]
    means = {r["model"]: {lb: statistics.mean(r["gains"][lb]) for lb in labels} for r in results}
    rank = {m: {lb: 1 + sorted(v.values(), reverse=True).index(v[lb]) for lb in labels} for m, v in means.items()}
    for lb in labels:
        cells = []
        for r in results:
            g = r["gains"][lb]
            spread = f" ± {statistics.pstdev(g):.3f}" if len(g) > 1 else ""
            cells.append(f"{means[r['model']][lb]:+.3f}{spread} (#{rank[r['model']][lb]})")
        table.append([lb, *cells])

    pairs = [["proxy", "target", "Spearman rho", "proxy's best", "target's best", "target's gain of the proxy's best",
              "regret on the target"]]
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            ma, mb = means[a["model"]], means[b["model"]]
            rho = spearman([ma[lb] for lb in labels], [mb[lb] for lb in labels])
            pick, best = max(labels, key=ma.get), max(labels, key=mb.get)
            pairs.append([a["model"], b["model"], f"{rho:+.2f}", pick, best, f"{mb[pick]:+.3f}",
                          f"{mb[best] - mb[pick]:.3f}"])

    cmd = "python scripts/rank_agreement.py " + " ".join(shlex.quote(a.removeprefix(str(REPO) + "/"))
                                                         for a in sys.argv[1:])
    lines = [
        "# Rank agreement: does the proxy order schedules as the target does?",
        "",
        (f"Made by `{cmd}` on this 2-core CPU machine (a rerun resumes from "
         f"`{args.runs.relative_to(REPO) if args.runs.is_relative_to(REPO) else args.runs}`). "
         f"Family `{args.family}`: the proxies run it in the proxy world, SmolLM2 on its English counterpart. "
         f"`learned` is `{args.run.name}`'s greedy `schedule.yaml`; `random-0/1` are uniform draws from the "
         "search space with seeds 0 and 1. Every schedule runs with the same episode seed on the same task "
         "seeds of a model, at that model's step budget (the proxies 96 steps, SmolLM2 64 with its preset)."),
        "",
        "Mean composite gain over the base (± std over task seeds), and the rank on that model:",
        "",
        render_table(table, "markdown"),
        "",
        f"Between models (n = {len(labels)} schedules):",
        "",
        render_table(pairs, "markdown"),
        "",
        "Run time inside the runs (longer when other runs share the cores): "
        + ", ".join(f"{r['model']} {r['seconds'] / 60:.1f} min ({len(r['seeds'])} task seed"
                    f"{'s' if len(r['seeds']) > 1 else ''})" for r in results) + ".",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
