"""Where the built-in configs live, and how a name or a path becomes a file.

The built-in configs are package data (``metactl.configs``, the top-level ``configs/`` folder of a
checkout), so a wheel install has its default and expert schedules too.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from metactl.errors import ConfigError, did_you_mean

# A plain directory for every install metactl supports (wheel, sdist or editable; not a zip import).
CONFIGS = Path(str(files("metactl.configs")))


def builtin_config(kind: str, name: str) -> Path | None:
    """``configs/<kind>/<name>.yaml`` when metactl ships it (``name`` may be spelled as that path,
    as configs written by older versions do)."""
    path = Path(name)
    if path.parts[:2] == ("configs", kind) and len(path.parts) == 3:
        name = path.stem
    builtin = CONFIGS / kind / f"{name}.yaml"
    return builtin if builtin.is_file() else None


def builtin_names(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / kind).glob("*.yaml"))


def resolve_config_path(kind: str, name: str | Path) -> Path:
    """A YAML path, or the name of a built-in ``configs/<kind>/<name>.yaml``; errors list the built-ins."""
    builtin = builtin_config(kind, str(name))
    if builtin is not None:
        return builtin
    path = Path(name)
    if path.is_file():
        return path
    names = builtin_names(kind)
    raise ConfigError(
        f"{kind.rstrip('s')}: {str(name)!r} is neither a built-in one ({', '.join(names)}) nor a file."
        f"{did_you_mean(str(name), names)}"
    )


def resolve_schedule_path(name: str | Path) -> Path:
    """A built-in schedule name (``default``, ``expert``) or a YAML path."""
    return resolve_config_path("schedules", name)
