"""The example user suite (README: "Your own data") runs end to end: run-schedule and transfer."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from metactl.commands.cli import app

ROOT = Path(__file__).resolve().parents[1]
SUITE = str(ROOT / "examples" / "sums-suite")


def test_the_example_suite_runs_with_run_schedule_and_transfer(tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["run-schedule", "--suite", SUITE, "--schedule", "expert", "--steps", "8",
                                   "--out", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    final = [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()][-1]["scores"]
    assert {"target/style", "target/truth", "heldout/style", "heldout/truth", "composite"} <= set(final)

    out = tmp_path / "transfer"
    res = CliRunner().invoke(app, ["transfer", str(ROOT / "configs" / "schedules" / "expert.yaml"), "--model",
                                   "proxy-tiny", "--suite", SUITE, "--steps", "8", "--task-seed", "0",
                                   "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {"learned", "default"}
    assert (out / "comparison.txt").is_file()
