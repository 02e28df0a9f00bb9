"""A lever's effect, paired by controller seed: two controller_report.py files -> one table.

    python scripts/lever_effect.py docs/controller_results.md docs/controller_results_range2.md \
        --name "env.train_range=2" --out docs/lever_range2.md

Both files must come from ``scripts/controller_report.py`` on the same evaluation pairs (same task
seeds and episode seeds; the fixed schedules' rows then agree, which this script checks). For each
evaluated suite it pairs the learned policy's mean gain over base seed by seed (the same controller
seed starts from the same initial policy and draws the same first tasks, so what the two runs share
is removed; whether that shrinks the spread is measured, not assumed: a lever that changes what the
policy explores decorrelates the runs after the first update), gives the paired difference's 95%
interval (Student t, n - 1 degrees of freedom, sample std), and puts the fixed schedules' gains
beside them. It reads only the generated tables; nothing is retyped.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metactl.policies.config import MADE_FROM_POLICY
from metactl.rundir import atomic_write_text
from metactl.tables import mean_std, render_table, t_interval

PER_SEED = "Mean gain over base of each controller seed"
SCORES = "Held-out scores"


def _table_after(text: str, heading: str) -> list[list[str]]:
    """The first markdown table after the line starting with ``heading``, as rows of cells (header first)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            if not re.fullmatch(r"\|(\s*-+\s*\|)+", line.replace(":", "")):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows


def read_report(path: Path, policy: str) -> dict[str, dict]:
    """suite -> {"seeds": {label: {seed: gain}}, "fixed": {label: gain}} from a controller_report file
    (a one-seed file lists no per-seed rows: its scores table is that seed's)."""
    text = path.read_text()
    out = {}
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        suite = section.splitlines()[0].strip()
        if PER_SEED not in section:
            continue
        header, *rows = _table_after(section, PER_SEED)
        seeds = [int(h.split()[-1]) for h in header[1:]]
        per_seed = {r[0]: dict(zip(seeds, map(float, r[1:]))) for r in rows}
        header, *rows = _table_after(section, SCORES)
        col = header.index("gain over base")
        gains = {r[0]: float(r[col].split("±")[0]) for r in rows}
        if policy not in per_seed and len(seeds) == 1:
            per_seed[policy] = {seeds[0]: gains[policy]}
        fixed = {k: v for k, v in gains.items() if k not in per_seed and k not in MADE_FROM_POLICY}
        out[suite] = {"seeds": per_seed, "fixed": fixed}
    if not out:
        raise SystemExit(f"{path}: no per-seed table found; is it a scripts/controller_report.py file?")
    return out


def paired_interval(diffs: list[float]) -> str:
    """The mean paired difference with its 95% t interval, in words."""
    n = len(diffs)
    m, half = t_interval(diffs)
    if n < 2:
        return f"one seed: {m:+.3f}, no interval"
    sd = statistics.stdev(diffs)
    verdict = "excludes 0: an effect beyond seed noise" if abs(m) > half else "includes 0: no effect beyond seed noise"
    return (f"paired difference {m:+.3f}, 95% interval [{m - half:+.3f}, {m + half:+.3f}] (t, {n - 1} df, "
            f"sample std {sd:.3f}); it {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path, help="controller_report.py file without the lever")
    ap.add_argument("after", type=Path, help="controller_report.py file with the lever")
    ap.add_argument("--name", required=True, help="what the lever is, for the title")
    ap.add_argument("--policy", default="ppo")
    ap.add_argument("--after-policy", default=None,
                    help="the label read from AFTER (default: --policy): a lever that changes how a trained policy "
                    "acts, not how it trains, compares e.g. 'enveloped' in AFTER with 'ppo' in BEFORE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with_label = args.after_policy or args.policy
    before, after = read_report(args.before, args.policy), read_report(args.after, with_label)
    option = f" --after-policy {with_label}" if args.after_policy else ""
    for report in (before, after):  # the compared policies are never fixed schedules, whichever file
        for suite in report.values():
            suite["fixed"].pop(args.policy, None)
            suite["fixed"].pop(with_label, None)

    def shown(p: Path) -> str:
        p = p.resolve()
        return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)

    parts = [
        f"# Lever `{args.name}`, paired by controller seed",
        "",
        (f"Made by `python scripts/lever_effect.py {shown(args.before)} {shown(args.after)} "
         f"--name \"{args.name}\"{option} --out {shown(args.out)}` from the two reports' own tables: "
         f"[{args.before.name}]({args.before.name}) "
         f"without the lever, [{args.after.name}]({args.after.name}) with it. Each row is one controller seed's "
         f"mean held-out gain over base (the same (task, episode seed) pairs in both files), as the reports print "
         f"it (3 decimals), so a ± here can differ from a report's own in the last digit; ± is the population std "
         f"over seeds, as in the reports."),
    ]
    for suite, b in before.items():
        a = after.get(suite)
        if a is None:
            continue
        mismatch = [k for k in b["fixed"] if k in a["fixed"] and abs(b["fixed"][k] - a["fixed"][k]) > 1e-9]
        if mismatch:
            raise SystemExit(f"{suite}: fixed schedules {mismatch} differ between the files: not the same pairs")
        seeds = sorted(set(b["seeds"].get(args.policy, {})) & set(a["seeds"].get(with_label, {})))
        rows = [["controller seed", "without", "with", "with - without"]]
        diffs = []
        for s in seeds:
            x, y = b["seeds"][args.policy][s], a["seeds"][with_label][s]
            diffs.append(y - x)
            rows.append([str(s), f"{x:+.3f}", f"{y:+.3f}", f"{y - x:+.3f}"])
        xs = [b["seeds"][args.policy][s] for s in seeds]
        ys = [a["seeds"][with_label][s] for s in seeds]
        rows.append(["mean ± std", mean_std(xs, signed=True), mean_std(ys, signed=True), mean_std(diffs, signed=True)])
        better = sum(d > 0 for d in diffs)
        fixed = [["fixed schedule", "gain over base", f"{with_label} with the lever minus it (mean over seeds)"]]
        for k, v in sorted(a["fixed"].items(), key=lambda kv: -kv[1]):
            fixed.append([k, f"{v:+.3f}", f"{statistics.mean(ys) - v:+.3f}"])
        parts += [
            "",
            f"## {suite}",
            "",
            (f"`{args.policy}`" + (f" without, `{with_label}` with the lever" if args.after_policy else "")
             + f", {len(seeds)} controller seed{'s' if len(seeds) != 1 else ''}; "
             f"the lever raised the gain on {better} of them; {paired_interval(diffs)}."),
            "",
            render_table(rows, "markdown"),
            "",
            "The fixed schedules on the same pairs (identical in both files):",
            "",
            render_table(fixed, "markdown"),
        ]
    atomic_write_text(args.out, "\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
