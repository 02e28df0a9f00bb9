"""The report scripts that read other reports: they must keep parsing what controller_report.py writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_lever_effect_pairs_the_shipped_reports_by_seed(tmp_path):
    from lever_effect import read_report

    five = read_report(REPO / "docs" / "controller_results.md", "ppo")
    assert set(five) == {"train-families", "heldout-families"}
    assert sorted(five["train-families"]["seeds"]["ppo"]) == [0, 1, 2, 3, 4]
    assert "expert" in five["heldout-families"]["fixed"] and "ppo" not in five["heldout-families"]["fixed"]
    one = read_report(REPO / "docs" / "controller_results_layer.md", "ppo")  # one seed: no per-seed rows
    assert list(one["train-families"]["seeds"]["ppo"]) == [0]

    out = tmp_path / "same.md"
    report = str(REPO / "docs" / "controller_results.md")
    subprocess.run([sys.executable, str(REPO / "scripts" / "lever_effect.py"), report, report, "--name", "nothing",
                    "--out", str(out)], check=True)
    text = out.read_text()
    assert "| mean ± std |" in text and "raised the gain on 0 of them" in text


def test_lever_effect_refuses_reports_on_different_pairs(tmp_path):
    src = (REPO / "docs" / "controller_results.md").read_text()
    other = tmp_path / "other.md"
    other.write_text(src.replace("+0.647 ± 0.000 |", "+0.600 ± 0.000 |", 1))  # expert's gain, first suite
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "lever_effect.py"),
                           str(REPO / "docs" / "controller_results.md"), str(other), "--name", "x",
                           "--out", str(tmp_path / "x.md")], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "not the same pairs" in proc.stderr
    assert not (tmp_path / "x.md").exists()


@pytest.mark.parametrize("script", ["lever_effect.py", "time_tests.py"])
def test_report_scripts_explain_themselves(script):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], capture_output=True, text=True,
                          check=True)
    assert "usage" in proc.stdout and "python scripts/" + script in proc.stdout
