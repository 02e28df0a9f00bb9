"""Is there something for a controller to learn? Run schedules over task seeds and compare.

    python scripts/headroom.py --schedules default expert --task-seeds 0 1 2 --out docs/headroom.md
    python scripts/headroom.py --suite style-vs-truth format-vs-truth wrap-vs-keep sycophancy style-clash \\
        --schedules default expert alternate alternate-retain warmup-alternate-retain expert-retain \\
        --task-seeds 0 1 2 --seed 0 --out docs/headroom_families.md

Every schedule runs through the same runner as everything else. Prints, per suite and schedule,
the mean and spread over task seeds of every score part, the gain over the base, and how many
seeds reach both behaviours on held-out inputs. A behaviour counts as reached at >= 0.8, or,
where the base already had it (>= 0.8), within 0.05 of the base: for ``style-vs-truth`` that is
style >= 0.8 and truth within 0.05 of the base. The columns are the suite's own behaviours.

A schedule is a built-in name (``default``, ``expert``), a YAML path, or one of the hand
schedules below (:data:`HAND_SCHEDULES`), kept here so that the command in a generated file
reruns as it is.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from metactl.config import load_config
from metactl.runner import Engine
from metactl.schedule import Schedule
from metactl.tables import mean_std, render_table

REACHED = 0.8  # a behaviour the base lacks counts as reached from here
KEPT = 0.05  # one the base had counts as kept within this of the base

# Hand variants tried on the families (docs/world.md says what each was for).
HAND_SCHEDULES = {
    # ALRIGHT-style plain alternation: SFT and DPO 1:1 interleaved in one phase, full strength.
    "alternate": """
phases:
  - {fraction: 1.0, tools: {sft: {share: 1.0}, dpo: {share: 1.0}}}
""",
    # The second pilot's winner (DESIGN.md): alternation with SFT's output scaled to 0.7.
    "alternate-sft07": """
phases:
  - {fraction: 1.0, tools: {sft: {share: 1.0, output: 0.7}, dpo: {share: 1.0}}}
""",
    # SFT alone first (a head start), then 1:1 alternation.
    "warmup-alternate": """
phases:
  - {fraction: 0.25, tools: {sft: {share: 1.0}}}
  - {fraction: 0.75, tools: {sft: {share: 1.0}, dpo: {share: 1.0}}}
""",
    # Alternation with retain beside it (2:2:1): less drift at the cost of fewer tool steps.
    "alternate-retain": """
phases:
  - {fraction: 1.0, tools: {sft: {share: 2.0}, dpo: {share: 2.0}, retain: {share: 1.0}}}
""",
    # SFT's head start, then alternation with retain beside it (the expert's order, alternate-retain's mix).
    "warmup-alternate-retain": """
phases:
  - {fraction: 0.25, tools: {sft: {share: 1.0}}}
  - {fraction: 0.75, tools: {sft: {share: 2.0}, dpo: {share: 2.0}, retain: {share: 1.0}}}
""",
    # The expert with retain from its second phase on (the expert gives retain only its last quarter).
    "expert-retain": """
phases:
  - {fraction: 0.25, tools: {sft: {share: 1.0}}}
  - {fraction: 0.5, tools: {sft: {share: 1.0}, dpo: {share: 2.0}, retain: {share: 1.0}}}
  - {fraction: 0.25, tools: {sft: {share: 1.0}, dpo: {share: 1.0, output: 0.8}, retain: {share: 1.0}}}
""",
    # Alternation with DPO's output halved.
    "alternate-dpo05": """
phases:
  - {fraction: 1.0, tools: {sft: {share: 1.0}, dpo: {share: 1.0, output: 0.5}}}
""",
    # The default order with DPO's output halved: DPO repairs without erasing what SFT wrote.
    "default-dpo05": """
phases:
  - {fraction: 0.5, tools: {sft: {share: 1.0}}}
  - {fraction: 0.5, tools: {dpo: {share: 1.0, output: 0.5}}}
""",
    # The reverse order: DPO first, SFT last.
    "dpo-first": """
phases:
  - {fraction: 0.5, tools: {dpo: {share: 1.0}}}
  - {fraction: 0.5, tools: {sft: {share: 1.0}}}
""",
    # Alternation with SFT on the upper half of the layers only (imitation vs implantation).
    "alternate-sft-upper": """
phases:
  - {fraction: 1.0, tools: {sft: {share: 1.0, train: [0, 0, 1, 1]}, dpo: {share: 1.0}}}
""",
}


def resolve_schedule(name: str) -> Schedule:
    if name in HAND_SCHEDULES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(f"schema_version: 1\nname: {name}\nlayer_groups: 4" + HAND_SCHEDULES[name])
            return Schedule.named(path)
    return Schedule.named(name)


def score_columns(behaviours: list[str]) -> list[str]:
    return [f"{split}/{b}" for split in ("target", "heldout") for b in behaviours] + ["kl", "cka", "composite"]


def reached(scores: dict, base: dict, behaviour: str) -> bool:
    key = f"heldout/{behaviour}"
    had = base[key] >= REACHED
    return scores[key] >= (base[key] - KEPT if had else REACHED)


def reached_rule(behaviours: list[str], base: dict) -> str:
    parts = []
    for b in behaviours:
        key = f"heldout/{b}"
        had = base[key] >= REACHED
        parts.append(f"held-out {b} within {KEPT} of the base" if had else f"held-out {b} >= {REACHED}")
    return " and ".join(parts)


def run_suite(suite: str, schedules: dict[str, Schedule], args: argparse.Namespace) -> tuple[str, str, list[str]]:
    """(title, markdown body, summary row) of one suite's report; prints the tables as it goes."""
    cfg = load_config(None, ["training.score_every_phase=false", f"suite={suite}", *args.overrides])
    tools = sorted({t for s in schedules.values() for t in s.tool_names})
    engine = Engine(cfg, tools=tools, progress=True)
    behaviours = [b.name for b in engine.task.suite.behaviours]
    columns = score_columns(behaviours)
    results: dict[str, list[dict]] = {name: [] for name in ["base", *schedules]}
    first = next(iter(schedules))
    trajectory: list[list[dict]] = []  # per task seed, per phase: the first schedule's scores
    t0 = time.time()
    for ts in args.task_seeds:
        engine.load_task(ts)
        base = engine.task.base_scores
        results["base"].append(base)
        for name, sched in schedules.items():
            engine.config.training.score_every_phase = name == first
            phases = engine.run(sched, seed=args.seed)
            final = phases[-1].scores
            if name == first:
                trajectory.append([base] + [p.scores for p in phases])
            results[name].append({**final, "_both": all(reached(final, base, b) for b in behaviours)})
            print(f"{suite} task {ts} {name:>12}: " + " ".join(f"{c}={final[c]:.3f}" for c in columns), flush=True)

    base_comp = statistics.mean(r["composite"] for r in results["base"])
    gains = {name: statistics.mean(r["composite"] for r in rows) - base_comp for name, rows in results.items()}
    lines = [["schedule", *columns, "gain over base", "both reached"]]
    for name, rows in results.items():
        cells = [mean_std([r[c] for r in rows]) for c in columns]
        both = f"{sum(r.get('_both', False) for r in rows)} of {len(rows)}" if name != "base" else "-"
        lines.append([name, *cells, f"{gains[name]:+.3f}", both])
    table = render_table(lines, "markdown")
    print(table)
    traj = [["after", *columns]]
    labels = ["base"] + [f"phase {i}: " + "+".join(t for t, c in p.tools.items() if c.share > 0)
                         for i, p in enumerate(schedules[first].phases)]
    for i, label in enumerate(labels):
        traj.append([label, *(f"{statistics.mean(run[i][c] for run in trajectory):.3f}" for c in columns)])
    traj_table = render_table(traj, "markdown")
    print(traj_table)
    per_seed = [["schedule", *(f"task seed {ts}" for ts in args.task_seeds)]]
    for name, rows in results.items():
        per_seed.append([name, *(f"{r['composite']:.3f}" for r in rows)])
    per_seed_table = render_table(per_seed, "markdown")
    print(per_seed_table)
    wall = time.time() - t0
    print(f"{suite}: wall time {wall:.0f}s")
    # The base is the same model on every task of a suite; its first task's scores say which
    # behaviours it already had.
    rule = reached_rule(behaviours, results["base"][0])
    body = (
        f"{wall:.0f} s, {cfg.training.total_steps} steps per episode, task seeds {args.task_seeds}. "
        f"Behaviours: {', '.join(f'`{b.name}` ({b.tool})' for b in engine.task.suite.behaviours)}.\n\n"
        f"Mean ± std over task seeds of the final scores. *both reached*: {rule}.\n\n" + table + "\n\n"
        "### Composite per task seed\n\n" + per_seed_table + "\n\n"
        f"### Phase by phase: `{first}` (mean over task seeds)\n\n" + traj_table + "\n"
    )
    best = max(schedules, key=gains.__getitem__)
    summary = [f"`{suite}`", f"{base_comp:.3f}", *(f"{gains[n]:+.3f}" for n in schedules), f"`{best}`"]
    return f"`{cfg.model}` / `{suite}`", body, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", nargs="+", default=None, help="suites to run (default: the config's)")
    ap.add_argument("--schedules", nargs="+", default=["default", "expert"],
                    help=f"built-in names, YAML paths or hand schedules ({', '.join(HAND_SCHEDULES)})")
    ap.add_argument("--task-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0, help="training seed (adapter init, batches)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()

    schedules = {name: resolve_schedule(name) for name in args.schedules}
    suites = args.suite or [load_config(None, args.overrides).suite]
    t0 = time.time()
    reports = [run_suite(suite, schedules, args) for suite in suites]
    wall = time.time() - t0
    print(f"wall time {wall:.0f}s")
    if args.out:
        cmd = "python scripts/headroom.py " + " ".join(
            (["--suite", *args.suite] if args.suite else [])
            + ["--schedules", *args.schedules, "--task-seeds", *map(str, args.task_seeds), "--seed", str(args.seed)]
            + (["--set", *args.overrides] if args.overrides else []))
        head = f"Made by `{cmd}` ({wall:.0f} s on this machine).\n\n"
        if len(reports) == 1:
            title, body, _ = reports[0]
            text = f"# Headroom on {title}\n\n{head}{body.replace('### ', '## ')}"
        else:
            summary = render_table([["suite", "base composite", *schedules, "best"], *(r[2] for r in reports)],
                                   "markdown")
            text = (
                "# Headroom per suite\n\n" + head + "Gain of the mean composite over the base's, per schedule "
                f"(mean over task seeds {args.task_seeds}, training seed {args.seed}); *best*: the schedule with "
                "the highest mean composite. Per-suite detail below.\n\n" + summary + "\n\n"
                + "\n".join(f"## {t}\n\n{b}" for t, b, _ in reports)
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
