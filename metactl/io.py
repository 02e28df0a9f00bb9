"""Atomic file writes and validated JSONL reading."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from metactl.errors import DataError


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write via a temp file in the same directory and ``os.replace`` (never a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_dir(path: str | Path, fill) -> Path:
    """Build a directory in a temp sibling with ``fill(tmp_dir)``, then swap it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def claim_run_dir(out: Path, resume: bool, marker: str, kind: str) -> None:
    """Create ``out`` for a new run, or check it is a run to resume (it holds ``marker``).

    A new run never writes into a directory that holds files: the user's earlier work stays.
    """
    from metactl.errors import ConfigError

    if resume:
        if not (out / marker).is_file():
            raise ConfigError(f"--resume {out}: no {marker} there; it is not a {kind} dir.")
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: the directory exists and is not empty; pass --resume {out} to continue it, or pick another --out.")
    out.mkdir(parents=True, exist_ok=True)


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one complete line; a reader skips a torn last line (see :func:`read_jsonl`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path, required: tuple[str, ...] = (), kind: str = "row") -> list[dict]:
    """Read a JSONL file; errors name the file, the line number and the missing field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist.")
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}).") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}.")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(
                    f"{path}:{lineno}: {kind} is missing field {missing[0]!r} "
                    f"(a {kind} needs {', '.join(required)}; it has {', '.join(row) or 'nothing'})."
                )
            for k in required:
                if not isinstance(row[k], (str, list)):
                    raise DataError(f"{path}:{lineno}: field {k!r} must be a string, got {type(row[k]).__name__}.")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows.")
    return rows
