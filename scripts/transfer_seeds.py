"""One transfer case across controller seeds: does what one source run's transfer showed hold for the others?

``scripts/transfer_report.py`` runs a case (e.g. ``smollm2-averaged``) for one source run into
``runs/transfer-s<seed>/<case>/``. This reads those results for several source seeds and writes,
per seed and over seeds, the learned side's composite against each fixed schedule on the same
target tasks, paired per task, with the gain over the base model. It runs nothing.

    python scripts/transfer_seeds.py --case smollm2-averaged --seeds 0 1 2 3 4 --out docs/transfer_seeds_averaged.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metactl.rundir import atomic_write_text, read_jsonl

LEARNED = "learned"


def composites(path: Path) -> tuple[dict[str, dict[int, float]], dict[int, float]]:
    """``{label: {task seed: composite}}`` and ``{task seed: base composite}`` of one results.jsonl."""
    by_label: dict[str, dict[int, float]] = {}
    base: dict[int, float] = {}
    for row in read_jsonl(path, appended=True):
        if row.get("scores") is None:
            continue
        by_label.setdefault(row["label"], {})[row["task_seed"]] = row["scores"]["composite"]
        base[row["task_seed"]] = row["base"]["composite"]
    return by_label, base


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:+.3f}" if values else "-"
    return f"{statistics.mean(values):+.3f} ± {statistics.pstdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", required=True, help="a transfer_report.py case, e.g. smollm2-averaged")
    ap.add_argument("--seeds", type=int, nargs="+", required=True, help="controller seeds of the source runs")
    ap.add_argument("--work", default="runs/transfer-s{seed}", help="work dir of each seed's transfer_report run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    runs = {}
    for seed in args.seeds:
        path = REPO / args.work.format(seed=seed) / args.case / "results.jsonl"
        if not path.is_file():
            sys.exit(f"{path}: missing; run scripts/transfer_report.py --cases {args.case} for seed {seed} first")
        runs[seed] = composites(path)
    labels = sorted({lab for by_label, _ in runs.values() for lab in by_label} - {LEARNED})
    cmd = "python scripts/transfer_seeds.py " + " ".join(
        ["--case", args.case, "--seeds", *map(str, args.seeds)]
        + (["--work", args.work] if args.work != ap.get_default("work") else [])
        + ["--out", str(args.out)]
    )
    lines = [
        f"# Transfer case `{args.case}` over controller seeds",
        "",
        f"<!-- Written by `{cmd}`; do not edit by hand. -->",
        "",
        (f"Made by `{cmd}` from each source seed's `{args.work}/{args.case}/results.jsonl` "
        "(written by `scripts/transfer_report.py --run <that seed's source run> --cases "
        f"{args.case} --work {args.work} ...`; each seed's own doc holds its command and wall time). "
        "Composite on each target task (episode seed 0); `learned` is the transferred controller's side, "
        "the other columns fixed schedules on the same tasks. Gain over base: composite minus the base "
        "model's on that task."),
        "",
        "Mean composite per source seed (over its target tasks), and the learned side's paired wins:",
        "",
        "| controller seed | tasks | learned | gain over base | " + " | ".join(labels)
        + " | " + " | ".join(f"learned wins vs {lab}" for lab in labels) + " |",
        "|---|---|---|---|" + "---|" * (2 * len(labels)),
    ]
    diffs: dict[str, list[float]] = {lab: [] for lab in labels}
    seed_means: dict[str, list[float]] = {lab: [] for lab in [LEARNED, "gain", *labels]}
    for seed, (by_label, base) in runs.items():
        tasks = sorted(by_label.get(LEARNED, {}))
        learned = [by_label[LEARNED][t] for t in tasks]
        gain = [by_label[LEARNED][t] - base[t] for t in tasks]
        seed_means[LEARNED].append(statistics.mean(learned))
        seed_means["gain"].append(statistics.mean(gain))
        cells, wins = [], []
        for lab in labels:
            theirs = [by_label.get(lab, {}).get(t) for t in tasks]
            pairs = [(mine, other) for mine, other in zip(learned, theirs) if other is not None]
            if not pairs:
                cells.append("-")
                wins.append("-")
                continue
            theirs_mean = statistics.mean(o for _, o in pairs)
            seed_means[lab].append(theirs_mean)
            diffs[lab] += [m - o for m, o in pairs]
            cells.append(f"{theirs_mean:.3f}")
            wins.append(f"{sum(m > o for m, o in pairs)}/{len(pairs)}")
        lines.append(
            f"| {seed} | {', '.join(map(str, tasks))} | {statistics.mean(learned):.3f} | "
            f"{statistics.mean(gain):+.3f} | " + " | ".join(cells) + " | " + " | ".join(wins) + " |"
        )
    # Each work dir reruns the fixed schedules: every (schedule, task) value across the seeds' dirs.
    fixed: dict[tuple[str, int], list[float]] = {}
    for by_label, _ in runs.values():
        for lab in labels:
            for t, value in by_label.get(lab, {}).items():
                fixed.setdefault((lab, t), []).append(value)
    spread = max((max(v) - min(v) for v in fixed.values()), default=0.0)
    same = "identical across them" if spread == 0 else f"across them they differ by at most {spread:.2g}"
    tasks_all = sorted({t for by_label, _ in runs.values() for t in by_label.get(LEARNED, {})})
    bases = {t: base[t] for _, base in runs.values() for t in base}
    lines += [
        "",
        ("Composite per target task: the learned side from each source seed, the fixed schedules from the "
         f"first seed's work dir (each work dir runs them again: {same})."),
        "",
        "| task seed | base | " + " | ".join(f"learned, seed {seed}" for seed in runs) + " | "
        + " | ".join(labels) + " |",
        "|---|---|" + "---|" * (len(runs) + len(labels)),
    ]
    for t in tasks_all:
        mine = [runs[seed][0].get(LEARNED, {}).get(t) for seed in runs]
        theirs = [fixed[lab, t][0] if (lab, t) in fixed else None for lab in labels]
        lines.append(
            f"| {t} | {bases[t]:.3f} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in mine + theirs) + " |"
        )
    lines += [
        "",
        f"Over the {len(runs)} source seeds (mean ± std of the per-seed means):",
        "",
        "| side | composite |",
        "|---|---|",
        f"| learned | {_mean_std(seed_means[LEARNED]).lstrip('+')} |",
        f"| learned, gain over base | {_mean_std(seed_means['gain'])} |",
        *[f"| {lab} | {_mean_std(seed_means[lab]).lstrip('+')} |" for lab in labels],
        "",
        "Paired per (source seed, task): learned minus each fixed schedule.",
        "",
        "| fixed schedule | learned - it, mean | learned wins | pairs |",
        "|---|---|---|---|",
        *[
            f"| {lab} | {statistics.mean(d):+.3f} | {sum(x > 0 for x in d)}/{len(d)} | {len(d)} |"
            for lab, d in diffs.items() if d
        ],
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
