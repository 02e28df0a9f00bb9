"""Time the README's main command, ``metactl train-controller`` with no options, and keep its table.

    python scripts/time_default.py --out docs/default_run.md

Runs the real CLI in a subprocess (fresh run dir, default config), measures the wall time of the
whole command and of its parts (training from the run's episode log, evaluation as the rest), and
writes the table the command printed. The default must fit in 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metactl.rundir import atomic_write_text, read_config_data

BUDGET_MIN = 15.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs") / "default-warm", help="run dir (must not exist)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "default_run.md")
    args = ap.parse_args()
    if args.run.exists():
        raise SystemExit(f"--run {args.run} exists; this script times a fresh run (pick another path)")

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "metactl", "train-controller", "--out", str(args.run), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(proc.returncode)
    run = args.run if args.run.is_absolute() else REPO / args.run
    # Training ends when the controller is saved; the rest of the command is the evaluation.
    trained = (run / "controller.zip").stat().st_mtime
    started = (run / "config.yaml").stat().st_mtime
    ended = (run / "eval.jsonl").stat().st_mtime
    episodes = read_config_data(run)["total_episodes"]
    verdict = "within" if wall / 60 <= BUDGET_MIN else "over"
    shown = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
    lines = [
        "# The default command, timed",
        "",
        (f"Made by `python scripts/time_default.py --out {shown}` on this machine ({os.cpu_count()} CPU cores, "
         f"{platform.processor() or platform.machine()}, Python {platform.python_version()}), nothing else "
         "running: `metactl train-controller` with its built-in default (`configs/train/default.yaml`) into a "
         "fresh run dir."),
        "",
        f"- Wall time of the whole command: **{wall / 60:.1f} min** ({verdict} the {BUDGET_MIN:.0f}-minute budget).",
        (f"- Start-up and training ({episodes} episodes): {(trained - started) / 60:.1f} min; evaluation (the greedy "
         f"policy, `averaged` and every compare schedule on the held-out tasks of both suites): "
         f"{(ended - trained) / 60:.1f} min."),
        ("- The first run on a freshly installed machine is slower by minutes of start-up (modules read "
         "from a cold disk cache); this is a second run."),
        "",
        "What it printed:",
        "",
        "```",
        proc.stdout.strip(),
        "```",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
