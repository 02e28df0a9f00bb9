"""How many of a controller's training episodes wrecked the model, and with what DPO strength?

    python scripts/training_collapses.py runs/controller-ppo-s0 [runs/...] [--out docs/collapses.md]

Reads each run's ``scores.jsonl`` (one row per episode and phase). An episode *collapsed* when
its return is at or below ``-0.9``: the final composite lost nearly all of the base's (both
behaviours and stability near 0; a NaN divergence returns ``-env.diverged_penalty``, -1, and
counts too). For each run it prints the count, then splits the episodes by the strongest DPO
step the policy asked for in any phase (learning-rate multiplier x output scale of the first
cell; with ``env.controls=tool`` every cell is equal), to show whether exploring a stronger DPO
is what wrecks them. With ``--out`` the same lines are also written to a markdown file, with the
command that made them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metactl.rundir import atomic_write_text

COLLAPSED = -0.9
THRESHOLDS = (1.0, 1.5, 2.0, 3.0)


def episodes(run: Path) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    with (run / "scores.jsonl").open() as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.setdefault(row["episode"], []).append(row)
    return out


def dpo_strength(rows: list[dict]) -> float:
    best = 0.0
    for r in rows:
        c = (r.get("controls") or {}).get("dpo")
        if c and c["share"] > 0:
            best = max(best, c["train"][0][0] * c["output"][0][0])
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="train-controller run dirs")
    ap.add_argument("--out", type=Path, default=None, help="also write the lines to this markdown file")
    args = ap.parse_args()
    lines = []
    for run in args.runs:
        eps = episodes(run)
        rows = [(ep[-1]["return"] is not None and ep[-1]["return"] <= COLLAPSED, dpo_strength(ep))
                for ep in eps.values()]
        lines.append(f"{run}: {sum(c for c, _ in rows)} of {len(rows)} training episodes collapsed "
                     f"(return <= {COLLAPSED})")
        for t in THRESHOLDS:
            hi = [c for c, s in rows if s > t]
            lo = [c for c, s in rows if s <= t]
            lines.append(f"  max DPO lr x output > {t}: {sum(hi)} of {len(hi)} collapsed; "
                         f"<= {t}: {sum(lo)} of {len(lo)}")
    print("\n".join(lines))
    if args.out:
        command = " ".join(["python scripts/training_collapses.py", *map(str, args.runs), "--out", str(args.out)])
        atomic_write_text(args.out, f"# Collapsed training episodes\n\nMade by `{command}`.\n\n```\n"
                                    + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
