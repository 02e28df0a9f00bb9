"""Joining or starting Ray, and checking that a cluster can hold the env actors asked for."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from metactl.envs.config import RayConfig
from metactl.errors import ConfigError


def require_ray() -> None:
    """Fail with the install command when the optional ``ray`` extra is missing."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "vec_env: ray needs Ray, which is not installed; pip install 'metactl[ray]' (or set vec_env: subproc)."
        )


def init_ray(config: RayConfig) -> bool:
    """Connect to (or start) Ray as ``config`` says; True when this call started it (and owns shutdown)."""
    require_ray()
    import ray

    if ray.is_initialized():
        return False
    # Offline machines are the norm here: no usage report to usage-stats.ray.io.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": False}
    if config.address is None:
        kwargs["num_cpus"] = config.num_cpus
    try:
        # "local" starts a fresh instance even where `ray start` left one running on this machine
        # (plain ray.init() would join that one, with its own resources and lifetime).
        ray.init(address=config.address or "local", **kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"ray.address: no Ray cluster answers at {config.address!r} ({exc}); start one with `ray start --head`, "
            "or set ray.address: null to start a local instance."
        ) from exc
    return True


def check_fits(config: RayConfig, n_envs: int) -> None:
    """Fail at once, not by waiting forever, when the cluster cannot hold ``n_envs`` env actors."""
    import ray

    have = ray.cluster_resources()
    for kind, each, key in (("CPU", config.cpus_per_env, "cpus_per_env"), ("GPU", config.gpus_per_env, "gpus_per_env")):
        if each > 0 and n_envs * each > have.get(kind, 0) + 1e-9:
            total = have.get(kind, 0)
            fits = math.floor(1000 * total / n_envs) / 1000  # rounded down, so the suggestion does fit
            hint = (
                f"set ray.{key}={fits:g} (actors share the {kind}s), use fewer envs, or add nodes"
                if fits > 0
                else f"set ray.{key}=0"
            )
            raise ConfigError(
                f"ray.{key}: {n_envs} env actors x {each:g} {kind} = {n_envs * each:g} {kind}, but the Ray cluster has "
                f"{total:g} {kind} in all; {hint}."
            )
