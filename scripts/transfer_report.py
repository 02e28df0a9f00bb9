"""Make docs/transfer.md: a proxy-tiny controller transferred to proxy-large and to SmolLM2-135M.

Each case runs the real CLI (``metactl transfer``) in a subprocess, so the figures are exactly
what a user gets, and times it. Every case compares learned vs default vs expert on the same
task seeds at the same step budget. ``metactl transfer`` resumes, so rerunning this script after
an interruption only runs what is missing.

    python scripts/transfer_report.py --run runs/controller-ppo-s0 --out docs/transfer.md

Without ``--run`` (or if it does not exist) the default ``metactl train-controller`` is run first
(~11 min on 2 cores).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metactl.evaluation import Evaluation, format_comparison
from metactl.rundir import GUARD, atomic_write_text, read_config_data, read_jsonl
from metactl.score_parts import is_better
from metactl.tables import render_table

STYLE_NOTE = (
    "- On the style-vs-truth targets the `default` schedule (SFT, then DPO at full force) loses the "
    "style entirely, so most of the margin over it is the style the learned schedule keeps; on the parts "
    "where default is already at the ceiling (truth) the learned side can only tie or lose a little."
)
CASES = {
    "proxy-large": {
        "model": "proxy-large",
        "mode": "schedule",
        "title": "proxy-tiny -> proxy-large (proxy world), schedule mode",
        "notes": [STYLE_NOTE],
    },
    "proxy-large-policy": {
        "model": "proxy-large",
        "mode": "policy",
        "title": "proxy-tiny -> proxy-large (proxy world), policy mode",
    },
    "smollm2": {
        "model": "smollm2-135m",
        "mode": "schedule",
        "merge": True,
        "title": "proxy-tiny -> smollm2-135m (English suite), schedule mode",
        "notes": [STYLE_NOTE],
    },
    # The policy's averaged schedule (its phase controls on 8 training tasks averaged): on the held-out
    # families it scored above the closed loop and the greedy schedule.yaml (docs/controller.md).
    "proxy-large-averaged": {
        "model": "proxy-large",
        "mode": "schedule",
        "file": "averaged.yaml",
        "title": "proxy-tiny -> proxy-large (proxy world), the averaged schedule",
    },
    "smollm2-averaged": {
        "model": "smollm2-135m",
        "mode": "schedule",
        "file": "averaged.yaml",
        "title": "proxy-tiny -> smollm2-135m (English suite), the averaged schedule",
    },
    # A closed-loop run on SmolLM2 reads interference and a quick score after every phase (221 s
    # against 155 s open loop), so one task seed.
    "smollm2-policy": {
        "model": "smollm2-135m",
        "mode": "policy",
        "seeds": [1000],
        "title": "proxy-tiny -> smollm2-135m (English suite), policy mode, one task seed",
    },
    # Closed loop on an English family whose proxy counterpart is one of the held-out families:
    # the controller never trained on this conflict in any language.
    "smollm2-policy-unseen": {
        "model": "smollm2-135m",
        "mode": "policy",
        "suite": "sycophancy-en",
        "compare": ["maxright"],
        "title": "proxy-tiny -> smollm2-135m, policy mode, on sycophancy-en (a family the controller never saw)",
        "notes": [(
            "- sycophancy-en: both fixed schedules end below the base (their gain over base row): at the preset's "
            "learning rates, SFT then DPO at full force (`default`) and maxright's full-strength alternation "
            "overtrain SmolLM2 on this family (KL far above the learned side's, stability near 0), so much of the "
            "learned side's margin is the collapse it avoided: its own gain over the base (the last row) is what it "
            "adds to the model. `expert` was not run on this case."
        )],
    },
    # The same closed loop kept inside its training envelope (--envelope): the guard made for readings
    # the controller never trained on, here a new family on a new model.
    "smollm2-policy-unseen-envelope": {
        "model": "smollm2-135m",
        "mode": "policy",
        "envelope": True,
        "suite": "sycophancy-en",
        "compare": ["maxright"],
        "title": "proxy-tiny -> smollm2-135m, policy mode with --envelope, on sycophancy-en (never seen)",
    },
    # The closed loop behind its guard (--guard hold): its own action where the target's readings lie
    # as near its training readings as those lie to each other, its mean actions from the first
    # reading that does not.
    "smollm2-policy-unseen-guard": {
        "model": "smollm2-135m",
        "mode": "policy",
        "guard": "hold",
        "suite": "sycophancy-en",
        "compare": ["maxright"],
        "title": "proxy-tiny -> smollm2-135m, policy mode with --guard hold, on sycophancy-en (never seen)",
    },
}
UNSEEN = ("smollm2-policy-unseen", "smollm2-policy-unseen-envelope", "smollm2-policy-unseen-guard")
VERDICT_PARTS = [("target", "target behaviour"), ("heldout", "held-out generalisation"), ("kl", "KL to base")]


def metactl(*args: str) -> list[str]:
    return [sys.executable, "-m", "metactl", *args]


def _rel(arg: str) -> str:
    """Paths inside the repo shown relative to it, as a user would type them."""
    return arg.removeprefix(str(REPO) + "/")


def ensure_run(run: Path) -> float:
    if (run / "schedule.yaml").is_file() and (run / "controller.zip").is_file():
        return 0.0
    t = time.perf_counter()
    subprocess.run(metactl("train-controller", "--out", str(run)), check=True, cwd=REPO)
    return time.perf_counter() - t


def run_case(name: str, run: Path, seeds: list[int], work: Path, compare: list[str]) -> dict:
    case = CASES[name]
    out = work / name
    source = run / case["file"] if "file" in case else run
    args = ["transfer", str(source), "--model", case["model"], "--mode", case["mode"], "--out", str(out)]
    if "file" in case:
        # A schedule file carries no run settings; these keep it on the run dir's own (the preset, if the
        # target has one, still sets the suite): the same comparison as the run dir's schedule.yaml.
        src = read_config_data(run)["run"]
        args += ["--set", f"run.training.layer_groups={src['training']['layer_groups']}"]
        if not (REPO / "configs" / "transfer" / f"{case['model']}.yaml").is_file():
            args += ["--suite", src["suite"]]
    if "suite" in case:
        args += ["--suite", case["suite"]]
    for s in case.get("seeds", seeds):
        args += ["--task-seed", str(s)]
    for c in case.get("compare", compare):
        args += ["--compare", c]
    if case.get("merge"):
        args.append("--merge")
    if case.get("envelope"):
        args.append("--envelope")
    if case.get("guard"):
        args += ["--guard", case["guard"]]
    cmd = "metactl " + " ".join(shlex.quote(_rel(a)) for a in args)
    print(f"\n== {name}: {cmd}", flush=True)
    # The wall time of the run that did the work; a rerun that only resumes reuses it.
    wall_file = out / "wall_seconds.txt"
    t = time.perf_counter()
    subprocess.run(metactl(*args), check=True, cwd=REPO)
    wall = time.perf_counter() - t
    if wall_file.is_file():
        wall = float(wall_file.read_text())
    else:
        atomic_write_text(wall_file, f"{wall:.1f}\n")
    rows = read_jsonl(out / "results.jsonl", appended=True)
    return {
        "name": name,
        "cmd": cmd,
        "wall": wall,
        "rows": rows,
        "out": out,
        "layers": (out / "comparison.txt").read_text().splitlines()[0],
        "guard": source / GUARD if case.get("guard") else None,
    }


def guard_line(path: Path, rows: list[dict]) -> str:
    """Which phases of each learned run took the guard's fallback (the source run's mean action)."""
    import numpy as np

    from metactl.policies.guard import ObservationGuard

    guard = ObservationGuard.load(path)
    fell = []
    for r in rows:
        phases = [p + 1 for p, a in enumerate(r.get("actions") or []) if np.allclose(a, guard.fallback[p], atol=1e-6)]
        fell.append(f"task {r['task_seed']}: {', '.join(map(str, phases)) or 'none'}")
    return (f"Phases (of {guard.phases}) that ran the guard's fallback, the source controller's mean action on its "
            f"training tasks: {'; '.join(fell)}.")


def section(result: dict) -> list[str]:
    case = CASES[result["name"]]
    rows = result["rows"]
    ev = Evaluation([{k: r[k] for k in ("label", "task_seed", "scores", "base")} for r in rows])
    s = ev.summary()
    run_seconds = sum(r["seconds"] for r in rows)
    lines = [
        f"## {case['title']}",
        "",
        "```",
        result["cmd"],
        "```",
        "",
        (
            f"Wall time {result['wall'] / 60:.1f} min for this command ({run_seconds / 60:.1f} min inside the runs, "
            f"the rest loading the model and each task's references and base scores). {result['layers']}."
        ),
        "",
        "Mean ± std over the task seeds:",
        "",
        "```",
        render_table(format_comparison(ev, "learned")),
        "```",
        "",
    ]
    # Per task: does learned beat each baseline on the composite?
    by = {(r["label"], r["task_seed"]): r for r in rows}
    seeds = sorted({r["task_seed"] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    others = [lb for lb in labels if lb != "learned"]
    per_task = [["task seed", "base", *labels, *(f"learned beats {lb}" for lb in others)]]
    wins = dict.fromkeys(others, 0)
    for ts in seeds:
        comp = {lb: by[(lb, ts)]["scores"]["composite"] for lb in labels}
        for lb in others:
            wins[lb] += comp["learned"] > comp[lb]
        per_task.append(
            [
                str(ts),
                f"{by[('learned', ts)]['base']['composite']:.3f}",
                *(f"{comp[lb]:.3f}" for lb in labels),
                *("yes" if comp["learned"] > comp[lb] else "no" for lb in others),
            ]
        )
    lines += ["Composite per task seed:", "", render_table(per_task, "markdown"), ""]
    if result.get("guard"):
        lines += [guard_line(result["guard"], [by[("learned", ts)] for ts in seeds]), ""]
    for lb in others:
        lines.append(
            f"Learned beats {lb} on the composite on {wins[lb]} of {len(seeds)} task seeds "
            f"(mean {s['learned']['composite'][0]:.3f} vs {s[lb]['composite'][0]:.3f}, paired difference "
            f"{s['learned']['composite'][0] - s[lb]['composite'][0]:+.3f})."
        )
    lines.append("")
    verdicts = []
    for key, what in VERDICT_PARTS:
        parts = ["kl"] if key == "kl" else [p for p in s["learned"] if p.startswith(key + "/")]
        d = {p: s["learned"][p][0] - s["default"][p][0] for p in parts}
        detail = ", ".join(f"{p} {v:+.3f}" for p, v in d.items())
        if key == "kl":
            good = is_better("kl", s["learned"]["kl"][0], s["default"]["kl"][0])
        else:  # the split's own score: the geometric mean of its behaviours, as the composite uses it
            mean = {lb: sum(by[(lb, ts)]["scores"][key] for ts in seeds) / len(seeds) for lb in ("learned", "default")}
            good = mean["learned"] > mean["default"]
            # A mixture of families names its behaviours per family: then the split's score alone.
            detail = f"{key} score {mean['learned']:.3f} vs {mean['default']:.3f}" + (f"; {detail}" if detail else "")
        verdicts.append(f"- {what}: {'**learned better**' if good else '**learned not better**'} ({detail})")
    return [*lines, "Against default, part by part (learned - default):", "", *verdicts, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run", type=Path, default=REPO / "runs" / "controller-ppo-s0", help="train-controller run dir to transfer"
    )
    ap.add_argument("--cases", nargs="+", default=[c for c in CASES if c not in UNSEEN],
                    choices=list(CASES), help="which transfers to run and report (the unseen-family cases write "
                    "docs/transfer_unseen.md: --cases " + " ".join(UNSEEN) + " --out docs/transfer_unseen.md)")
    ap.add_argument("--task-seeds", nargs="+", type=int, default=[1000, 1001, 1002])
    ap.add_argument(
        "--work", type=Path, default=REPO / "runs" / "transfer-report", help="where the transfer outputs go"
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "transfer.md")
    args = ap.parse_args()

    train_s = ensure_run(args.run)
    source_cfg = read_config_data(args.run)
    episodes = source_cfg["total_episodes"]
    results = []
    for name in args.cases:
        compare = ["expert"] if CASES[name]["mode"] == "schedule" else []
        results.append(run_case(name, args.run, args.task_seeds, args.work, compare))

    lines = [
        "# Transferring a learned controller to larger models",
        "",
        "Made by `python scripts/transfer_report.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "` "
        f"on this 2-core CPU machine. Source: `{args.run.name}`, a default `metactl train-controller` run "
        f"(PPO, proxy-tiny, {episodes} episodes"
        + (f", trained here in {train_s / 60:.1f} min" if train_s else "")
        + "). "
        "`learned` is the transferred controller's decisions, the other columns fixed schedules "
        "(`configs/schedules/`: `default`, `expert`, the published hand rule `maxright`), "
        "all at the same step budget, episode seed and task seeds, through the same runner.",
        "",
    ]
    lines += [
        (
            "How the decisions map: the source schedule has 2 relative depth groups; layer `l` of `L` goes to "
            "group `floor(2 l / L)` (proxy-tiny: 0-1 | 2-3, proxy-large: 0-3 | 4-7, SmolLM2: 0-14 | 15-29), and "
            "its `attn` / `mlp` controls go to the modules each architecture names so (the layer map line of each "
            "case). Phase lengths are fractions of the target's step budget. In schedule mode the greedy schedule "
            f"the controller chose on proxy-tiny task seed {source_cfg.get('schedule_task_seed', 1000)} (the run's "
            "`schedule.yaml`: a task outside its training range and its evaluation tasks) is replayed unchanged on "
            "every target task; in policy mode the controller chooses every phase from the target run's own "
            "observations"
            + (", and with `--envelope` each of its actions is clipped into the range it took in that phase on its "
               "training tasks (the run's `envelope.json`)." if any(CASES[n].get("envelope") for n in args.cases)
               else ".")
        ),
        "",
    ]
    for r in results:
        lines += section(r)
    lines += [
        "## Caveats",
        "",
        (
            f"- One source controller (seed {source_cfg.get('seed', 0)}). The proxy-tiny figures over five "
            "controller seeds are in "
            "docs/controller.md; this file covers one source seed (`scripts/transfer_seeds.py` puts the same "
            "case from several seeds side by side)."
        ),
        *dict.fromkeys(note for name in args.cases for note in CASES[name].get("notes", [])),
        (
            "- SmolLM2 runs with `configs/transfer/smollm2-135m.yaml`: 64 steps (the proxies 96), batch 8 "
            "(16), learning rates about 3x lower than the proxy's (SFT and retain 3e-4, DPO 1e-4), 32 of the "
            "64 probes per behaviour and split. "
            "These were set once from one calibration run, not tuned per schedule."
        ),
        (
            "- Policy mode reads adapter norms, which grow with the model's width; the controller was never "
            "trained on norms of this size (the observation clips them at its bound)."
        ),
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
