"""Every figure in the README's result tables is traceable: each table is preceded by a comment
naming the generated file it comes from, and every number in it appears in that file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- figures: (\S+) -->\n\n?((?:\|.*\|\n)+)")
NUMBER = re.compile(r"[+-]?\d+\.\d+")


def _tables() -> list[tuple[str, str]]:
    return MARKER.findall((ROOT / "README.md").read_text())


def test_the_readme_result_tables_cite_their_generated_files():
    cited = {path for path, _ in _tables()}
    required = {
        "docs/controller_results_rsppo.md", "docs/controller_results_wide96_antithetic.md", "docs/transfer.md",
        "docs/headroom.md", "docs/bench_runner.md",
    }
    assert required <= cited


def test_every_number_in_a_result_table_appears_in_the_file_it_cites():
    """(Made to fail once by leaving the README's old train-controller table, 2.285 and all, which
    no generated file holds.)"""
    for path, table in _tables():
        source = (ROOT / path).read_text()
        missing = [n for n in NUMBER.findall(table) if n not in source and n.lstrip("+") not in source]
        assert not missing, f"README numbers {missing} are not in {path}"


# Pages whose commentary cites figures: every number on the page must be in its generated file.
COMMENTARY = {"docs/inspect.md": "docs/inspect_results.md"}


def test_commentary_cites_only_numbers_its_generated_file_holds():
    for page, generated in COMMENTARY.items():
        source = (ROOT / generated).read_text()
        text = (ROOT / page).read_text()
        missing = [n for n in NUMBER.findall(text) if n not in source and n.lstrip("+-") not in source]
        assert not missing, f"{page} cites {missing}, which {generated} does not hold"
