"""Render an inspect report.html in headless Chromium and save a screenshot (proof it renders offline).

    python scripts/screenshot_report.py RUN_DIR/inspect/task-1000/report.html docs/inspect/report.png

Needs a Chromium binary (Debian: ``apt-get install chromium``); ``--chromium`` points at another.
Exits non-zero if Chromium fails or the screenshot is blank.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def screenshot(html: Path, png: Path, chromium: str, width: int = 1280, height: int = 6000) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png.resolve()}",
            html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not png.is_file():
        sys.exit(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    ap.add_argument("--height", type=int, default=6000, help="page height in pixels to capture")
    args = ap.parse_args()
    png = screenshot(args.html, args.png, args.chromium, height=args.height)
    import matplotlib.image

    img = matplotlib.image.imread(png)
    # A page that failed to render is one flat colour; the report has text and pictures.
    if float(img[..., :3].std()) < 0.02:
        sys.exit(f"{png}: the screenshot is blank")
    print(f"{png}: {img.shape[1]}x{img.shape[0]} px")


if __name__ == "__main__":
    main()
