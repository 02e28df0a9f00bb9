"""Atomic writes: all or nothing, and the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from metactl.rundir import atomic_write_dir, atomic_write_text, atomic_write_with


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_file_gets_the_mode_open_would_give_not_mkstemps_owner_only(tmp_path: Path, umask_022) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert _mode(written) == _mode(plain) == 0o644


def test_replacing_a_file_keeps_its_own_mode(tmp_path: Path, umask_022) -> None:
    path = tmp_path / "schedule.yaml"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_new_directory_gets_the_mode_mkdir_would_give(tmp_path: Path, umask_022) -> None:
    out = atomic_write_dir(tmp_path / "adapters", lambda d: (d / "a.txt").write_text("x"))
    assert _mode(out) == 0o755 and (out / "a.txt").read_text() == "x"


def test_a_writer_that_fails_leaves_the_previous_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text("kept\n")

    def torn(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_with(path, torn)
    assert path.read_text() == "kept\n" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]
