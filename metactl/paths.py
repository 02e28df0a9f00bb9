"""Where the built-in configs live, and how a name or a path becomes a file."""

from __future__ import annotations

from pathlib import Path

from metactl.errors import ConfigError, did_you_mean

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(kind: str, name: str) -> Path:
    """A built-in ``configs/<kind>/<name>.yaml`` or a YAML path; errors list the built-ins."""
    builtin = CONFIGS / kind / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    path = Path(name)
    if not path.is_file():
        names = sorted(p.stem for p in (CONFIGS / kind).glob("*.yaml"))
        raise ConfigError(
            f"{kind.rstrip('s')}: {name!r} is neither a built-in one ({', '.join(names)}) nor a file.{did_you_mean(name, names)}"
        )
    return path


def resolve_schedule_path(name: str) -> Path:
    """A built-in schedule name (``default``, ``expert``) or a YAML path."""
    return resolve_config_path("schedules", name)
