"""The shape of every per-layer control: module kinds x relative layer groups.

A leaf module (the schedule, the adapters and the envs all speak in grids; none of them should
have to import another to know the shape).
"""

from __future__ import annotations

MODULE_KINDS = ("attn", "mlp")

Grid = list[list[float]]  # [kind][group]


def full_grid(value: float, groups: int) -> Grid:
    """Every (kind, group) cell at ``value``."""
    return [[float(value)] * groups for _ in MODULE_KINDS]
