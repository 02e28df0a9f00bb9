"""Write docs/bench_gpu.md from the logs of ``scripts/gpu_check.sh`` (a lent GPU's time is short, so
the checks run there and the report is made here, from their logs alone).

    python scripts/gpu_report.py docs/gpu_logs --out docs/bench_gpu.md

Reads, from the log folder: ``device.txt`` (nvidia-smi -L), ``exact.log`` (tests/test_population.py
on the GPU), ``bench.log`` (``scripts/bench_runner.py --device cuda``), optionally ``k.log`` (more
K values, one ``K k (episodes/min, rss MiB, GPU MiB)`` line each, when the sweep was split over two
calls), ``train.log`` (train-controller's closing lines) and ``commands.txt`` (what was run).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from metactl.rundir import atomic_write_text

ROW = re.compile(r"^\| (subproc|batched) \| (\w+) \| (\d+) x (\d+) \| ([^|]+) \| ([\d.]+) \| ([^|]+) \|$")


def sweep(log_dir: Path) -> tuple[list[tuple[str, str, str, str, float, str]], str]:
    """The bench's table rows (with any k.log rows added) and its header line."""
    rows, header = [], ""
    for line in (log_dir / "bench.log").read_text().splitlines():
        if line.startswith("NVIDIA") or " CPU cores; torch" in line:
            header = line
        m = ROW.match(line)
        if m:
            vec, dev, procs, threads, k, eps, mem = m.groups()
            rows.append((vec, dev, f"{procs} x {threads}", k.strip(), float(eps), mem.strip()))
    k_log = log_dir / "k.log"
    if k_log.is_file():
        for line in k_log.read_text().splitlines():
            if line.startswith("K "):
                k, rest = line[2:].split(" ", 1)
                eps, _, gpu = ast.literal_eval(rest)
                rows.append(("batched", "cuda", "1 x 1", k, eps, f"{gpu / int(k):.1f} MiB GPU"))
    return rows, header


def exactness(log_dir: Path) -> tuple[int, int, list[str]]:
    """Passed and failed counts, read off pytest's progress dots (``-qq`` prints no summary line)."""
    text = (log_dir / "exact.log").read_text()
    progress = "".join(m.group(1) for m in re.finditer(r"^([.FEsx]+)\s+\[\s*\d+%\]$", text, re.MULTILINE))
    failed = re.findall(r"^FAILED (\S+)", text, re.MULTILINE)
    return progress.count("."), progress.count("F") + progress.count("E"), failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows, header = sweep(args.logs)
    passed, failed, names = exactness(args.logs)
    device = (args.logs / "device.txt").read_text().strip().split(" (UUID")[0].split(": ", 1)[-1]
    lines = [
        "# Population engine on a GPU (proxy-tiny, default controller episode)",
        "",
        (
            f"Made by `python scripts/gpu_report.py {args.logs}` from the logs `scripts/gpu_check.sh` wrote on "
            f"{device} (the commands as run: {args.logs}/commands.txt)."
        ),
        "",
        header,
        "",
        (
            "| vec_env | device | processes x threads | K (episodes in one batch) | episodes/min | "
            "peak memory per episode |"
        ),
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {v} | {d} | {p} | {k} | {e:.1f} | {m} |" for v, d, p, k, e, m in rows]
    if (args.logs / "k.log").is_file():
        lines += ["", "Rows the bench log does not hold come from k.log (the same measurement, a second call)."]
    subs = {p: e for v, _, p, _, e, _ in rows if v == "subproc"}
    batched = [(e, k) for v, d, _, k, e, _ in rows if v == "batched" and d == "cuda"]
    eps, k = max(batched)
    two = subs["2 x 1"]
    most = max(subs, key=lambda p: int(p.split(" x ")[0]))
    lines += [
        "",
        (
            f"Exactness on the GPU (tests/test_population.py, `METACTL_TEST_DEVICE=cuda`, both sides of every "
            f"comparison on the GPU, tolerance 1e-4; on the GPU the vec-env test holds `gnorm/retain` to its "
            f"measured sensitivity, 2e-3: docs/obs_conditioning.md): {passed} passed, {failed} failed"
            + (f" ({', '.join(n.split('::')[-1] for n in names)})." if names else ".")
        ),
    ]
    train = args.logs / "train.log"
    if train.is_file():
        done = [ln for ln in train.read_text().splitlines() if re.match(r"^\d+ episodes, \d+s", ln)]
        if done:
            lines += ["", f"train-controller on the GPU (vec_env batched): `{done[0]}` (its settings: commands.txt)."]
    lines += [
        "",
        (
            f"episodes/min: batched {eps:.1f} (K={k}, cuda), subprocess {two:.1f}, ratio {eps / two:.2f}; "
            f"against {most} CPU processes ({subs[most]:.1f}): ratio {eps / subs[most]:.2f}"
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
