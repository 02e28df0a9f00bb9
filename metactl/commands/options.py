"""Option types and helpers every command's CLI shares."""

from __future__ import annotations

from typing import Annotated

import typer

SetOption = Annotated[list[str], typer.Option("--set", help="override KEY=VALUE (dot style, YAML value), repeatable")]
Quiet = Annotated[bool, typer.Option(help="no progress output")]
OVERWRITE = (
    "replace a run of this command already in the output dir (only the files this command writes are "
    "removed; a dir holding anything else is refused)"
)


def given(**values: object) -> list[str]:
    """``key=value`` overrides for the options the user gave (``None``: not given)."""
    return [f"{k}={v}" for k, v in values.items() if v is not None]
