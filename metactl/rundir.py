"""The run-dir format: file names, atomic writes, JSONL reading, claiming a directory.

Every command's output directory is written through this module, so a kill at any point leaves
either the previous complete file (or folder) or the new one, never half of one.

JSONL, one rule for every reader: metactl appends a row as one complete line (:func:`append_jsonl`),
so in a file metactl appended to, a last line that does not parse is a torn write (the run was
killed mid-line) and is skipped with a warning (``appended=True``); any other malformed line, and
every malformed line of a user's data file, is a :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import yaml

from metactl.errors import ConfigError, DataError

log = logging.getLogger("metactl.rundir")

# -- file names ------------------------------------------------------------------------------------
CONFIG = "config.yaml"  # the resolved config of the command (a resumed run reads it back)
SCHEDULE = "schedule.yaml"  # the schedule that ran (run-schedule, transfer) or the greedy one (train-controller)
AVERAGED_SCHEDULE = "averaged.yaml"  # train-controller: a closed-loop policy's phase controls averaged (open loop)
ENVELOPE = "envelope.json"  # train-controller: per phase, the range of a closed-loop policy's actions (training)
GUARD = "guard.json"  # train-controller: a closed-loop policy's observations and actions on training tasks
SCORES = "scores.jsonl"  # one row per (episode, phase)
EVAL = "eval.jsonl"  # train-controller: one row per (method, held-out task)
RESULTS = "results.jsonl"  # transfer and sweep: one row per (method, task) or finished trial
ADAPTERS = "adapters"  # peft adapters, one folder per tool
BASE_MODEL = "base_model.txt"  # the model path the adapters belong to
CHECKPOINTS = "checkpoints"  # train-controller: ckpt-<episodes>/ after every update
CONTROLLER = "controller.zip"  # train-controller: the SB3 model (ppo, bandit)
SWEEP = "sweep.yaml"  # sweep: the resolved sweep config
SEARCH_STATE = "search.json"  # train-controller (random, optuna): the search's trials
SEARCH_DIR = "search"  # train-controller under ppo.search_episodes: the search stage, a run dir of its own

# What each command writes at the top of its output directory: the only names it will ever replace
# (--overwrite), and what tells a directory holding one of its runs.
WRITES: dict[str, frozenset[str]] = {
    "run-schedule": frozenset({CONFIG, SCHEDULE, SCORES, ADAPTERS, BASE_MODEL, "tb"}),
    "train-controller": frozenset({CONFIG, SCORES, CHECKPOINTS, CONTROLLER, SEARCH_STATE, SCHEDULE, EVAL, ADAPTERS,
                                   BASE_MODEL, SEARCH_DIR, "learning_curve.png", "tb"}),
    "transfer": frozenset({CONFIG, RESULTS, SCHEDULE, ADAPTERS, BASE_MODEL, "merged", "comparison.txt"}),
    "sweep": frozenset({SWEEP, "trials", "tune", RESULTS, "summary.md"}),
    "inspect": frozenset({"report.json", "report.html", "jobs.jsonl", "decisions.png", "learning.png",
                          "attribution.png", "order.png", "why.png", "implantation.png"}),
}


# -- atomic writes ---------------------------------------------------------------------------------
def _fresh_sibling(path: Path, make: Callable[[str], object]) -> Path:
    """A new, uniquely named temp sibling of ``path``, made by ``make(name)``. Not mkstemp/mkdtemp: they
    make owner-only entries (0600, 0700) and os.replace keeps the mode, so a run dir shared with a group
    would turn unreadable to it; ``os.open(..., 0o666)`` and ``os.mkdir`` let the kernel apply the
    umask, as a plain write would."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            make(str(tmp))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp name next to {path}")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_with(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temp file in the same directory, which then replaces ``path``
    (``os.replace``: never a torn file). For writers that take a path (``torch.save``, ``savefig``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(path, lambda name: os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)))
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if path.exists():  # a file the user chmod-ed keeps its mode
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_dir(path: str | Path, fill: Callable[[Path], object]) -> Path:
    """Build a directory in a temp sibling with ``fill(tmp_dir)``, then swap it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(path, os.mkdir)
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


# -- JSONL -----------------------------------------------------------------------------------------
def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one complete line; a reader skips a torn last line (see :func:`read_jsonl`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Replace ``path`` with ``rows``, atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(
    path: str | Path, required: tuple[str, ...] = (), kind: str = "row", *, appended: bool = False
) -> list[dict]:
    """Read a JSONL file; errors name the file, the line number and the missing field.

    ``appended``: a file metactl appends to (a run dir's log). A missing file is empty, and a torn
    last line is skipped with a warning. Otherwise (a user's data file) the file must exist, hold
    rows, and every line must parse.
    """
    path = Path(path)
    if not path.is_file():
        if appended:
            return []
        raise DataError(f"{path}: file does not exist.")
    rows = []
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if appended and lineno == len(lines):
                log.warning("%s: dropping a torn last line (the run was killed while writing it)", path)
                continue
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
    if not rows and not appended:
        raise DataError(f"{path}: no rows.")
    return rows


# -- state that must load without running code ------------------------------------------------------
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def rng_from_state(state: dict) -> np.random.Generator:
    """A numpy Generator from its ``bit_generator.state`` (plain JSON data: no pickle)."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise DataError(f"RNG state: bit_generator {name!r} is not one of {', '.join(_BIT_GENERATORS)}.")
    rng = np.random.Generator(getattr(np.random, name)())
    rng.bit_generator.state = state
    return rng


# -- what a directory holds ------------------------------------------------------------------------
def run_kind(out: Path) -> str | None:
    """Which command's run ``out`` holds (finished or partial), from the files it keeps; None if none."""
    if (out / SWEEP).is_file():
        return "sweep"
    data = read_config_data(out)
    if data is not None:
        if "policy" in data:
            return "train-controller"
        if "source" in data and "mode" in data:
            return "transfer"
        return "run-schedule" if (out / SCORES).is_file() and (out / SCHEDULE).is_file() else None
    if (out / "report.json").is_file() or (out / "jobs.jsonl").is_file():
        return "inspect"
    return None


def _ours(name: str, command: str) -> bool:
    # Leftovers of an interrupted atomic write (".name.XXXX.tmp", ".name.old") are ours too.
    return name in WRITES[command] or (name.startswith(".") and (".tmp" in name or name.endswith(".old")))


def claim_output(out: Path, command: str, *, resume: bool = False, overwrite: bool = False,
                 resumable: bool = True, check_only: bool = False) -> bool:
    """The one rule for every command's output directory; True when ``out`` holds a run to continue.

    - missing or empty: a new run;
    - a run of the same command: continued when ``resume``; replaced when ``overwrite`` (only the
      files that command writes are removed); otherwise refused with both fixes;
    - anything else (another command's run, files metactl did not write): refused. No file this
      command did not write is ever deleted.

    ``check_only``: the same checks, nothing removed (commands that write their directory
    atomically at the end, and the other processes of a parallel run).
    """
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if resume:
            raise ConfigError(f"--resume {out}: there is no {command} run there to continue; drop --resume.")
        return False
    if not out.is_dir():
        raise ConfigError(f"--out {out}: it is a file, not a directory; pick another --out.")
    kind = run_kind(out)
    if kind != command:
        names = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        what = f"a {kind} run" if kind else f"files {command} did not write ({names})"
        raise ConfigError(f"--out {out}: it holds {what}; {command} never writes over them. Pick another --out.")
    if resume:
        return True
    if overwrite:
        foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name, command))
        if foreign:
            raise ConfigError(
                f"--overwrite {out}: it also holds {', '.join(foreign[:3])}, which {command} did not write; move "
                "them out first (nothing was deleted)."
            )
        for p in [] if check_only else out.iterdir():
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
        return False
    fixes = f"pass --resume {out} to continue it or --overwrite" if resumable else "pass --overwrite"
    raise ConfigError(f"--out {out}: it holds a {command} run; {fixes} to replace it, or pick another --out.")


@contextlib.contextmanager
def holding(out: Path, command: str) -> Iterator[None]:
    """Hold ``out`` for this process while ``command`` writes it.

    A second metactl process given the same directory while the first still writes it (``--resume``
    typed in another terminal, a copy of a job script) is refused at once, instead of both appending
    to its files and checkpoints. The lock is an advisory ``flock`` on the directory itself: no file is
    added to the run dir, and a killed process releases it. Where the platform has no ``flock``,
    nothing is held. A directory this call created and nothing filled is removed again.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():  # claim_output names this mistake
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"--out {out}: another process is writing a {command} run there now; wait for it to end (or stop "
                f"it) and then pass --resume {out} to continue it, or pick another --out."
            ) from None
        yield
    finally:
        os.close(fd)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def read_yaml(path: Path, label: str | None = None):
    """A YAML file's data; a syntax error is a :class:`ConfigError` naming ``label`` (default: the path)."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label or path}: not valid YAML ({exc}).") from exc


def read_versioned_json(path: str | Path, kind: str, version: int, keys: set[str]) -> dict:
    """A JSON record train-controller wrote into a run dir (``envelope.json``, ``guard.json``): a dict
    of ``version`` holding every key of ``keys``; anything else is a :class:`ConfigError` naming
    the file and what is wrong with it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); it is written by train-controller") from exc
    if not isinstance(data, dict) or data.get("version") != version:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ConfigError(f"{path}: expected {article} {kind} of version {version}, got "
                          f"{data.get('version') if isinstance(data, dict) else type(data).__name__!r}")
    missing = sorted(keys - set(data))
    if missing:
        raise ConfigError(f"{path}: {kind} lacks {missing}")
    return data


def read_config_data(run_dir: str | Path) -> dict | None:
    """The raw ``config.yaml`` of a run dir as plain data (no validation), or None without one."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    data = read_yaml(path)
    return data if isinstance(data, dict) else {}


def is_train_controller_dir(run_dir: str | Path) -> bool:
    """A train-controller run dir's config names a ``policy``; run-schedule and transfer dirs' do not."""
    data = read_config_data(run_dir)
    return data is not None and "policy" in data
