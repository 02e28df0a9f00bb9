"""Pretrain a built-in proxy model on the proxy world (deterministic on CPU).

    python scripts/pretrain_proxy.py proxy-tiny            # -> metactl/assets/proxy-tiny
    python scripts/pretrain_proxy.py proxy-large --out DIR

The shipped weights under metactl/assets/ were produced by this script with 1 torch thread.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metactl.models.proxy import PROXY_SPECS, pretrain

ASSETS = Path(__file__).resolve().parents[1] / "metactl" / "assets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(PROXY_SPECS))
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: metactl/assets/NAME)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: reproducible, robust to a busy machine)"
    )
    args = parser.parse_args()
    out = pretrain(PROXY_SPECS[args.name], args.out or ASSETS / args.name, threads=args.threads)
    print((out / "pretrain_report.txt").read_text())


if __name__ == "__main__":
    main()
