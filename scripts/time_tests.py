"""Time the README's test command on this machine and keep where the time goes.

    python scripts/time_tests.py --out docs/test_time.md

Runs ``python -m pytest -m "not slow" -n auto --dist loadgroup`` (the README's and CI's command: one
test process per core, each test file on one process) with ``--durations`` in a subprocess, and
writes the wall time, the pass/fail line and the slowest tests. The suite should stay under about
15 minutes on 2 cores (CI's machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metactl.rundir import atomic_write_text

COMMAND = ["-m", "pytest", "-m", "not slow", "-n", "auto", "--dist", "loadgroup"]
BUDGET_MIN = 15.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "test_time.md")
    ap.add_argument("--slowest", type=int, default=15, help="how many of the slowest tests to list")
    args = ap.parse_args()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *COMMAND, f"--durations={args.slowest}", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    summary = next((line.strip("= ") for line in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed)", line)),
                   f"pytest exited {proc.returncode} without a summary line")
    slow = re.findall(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)", out, flags=re.MULTILINE)
    shown = args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out
    verdict = "within" if wall / 60 <= BUDGET_MIN else "over"
    lines = [
        "# The test suite, timed",
        "",
        (f"Made by `python scripts/time_tests.py --out {shown}` on this machine ({os.cpu_count()} CPU cores, "
         f"{platform.processor() or platform.machine()}, Python {platform.python_version()}), nothing else "
         f"running: `python {' '.join(COMMAND[:3])} \"not slow\" {' '.join(COMMAND[4:])}`."),
        "",
        f"- Wall time: **{wall / 60:.1f} min** ({verdict} the ~{BUDGET_MIN:.0f}-minute guideline).",
        f"- Result: {summary}.",
        "",
        f"The {len(slow)} slowest test phases (seconds, one process each; the processes run side by side):",
        "",
        "| seconds | phase | test |",
        "|---|---|---|",
        *(f"| {float(s):.1f} | {phase} | `{name}` |" for s, phase, name in slow),
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"{wall / 60:.1f} min; {summary} -> {shown}")
    if proc.returncode != 0:
        sys.stderr.write(out[-5000:])
        raise SystemExit(proc.returncode)


if __name__ == "__main__":
    main()
