"""Shared fixtures: one real proxy-tiny engine per session (cheap after the first build)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FAST = ["training.total_steps=24", "training.score_every_phase=false"]


@pytest.fixture(scope="session")
def engine():
    from metactl.config import load_config
    from metactl.runner import Engine

    return Engine(load_config(None, FAST), progress=False)


@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if anything tries to load model weights (validation must come first)."""
    import metactl.models
    import metactl.runner

    def boom(*args, **kwargs):
        raise AssertionError("model weights were loaded before the input was validated")

    monkeypatch.setattr(metactl.models, "load_model", boom)
    monkeypatch.setattr(metactl.runner, "load_model", boom)


# Tests run one process per core (pytest-xdist, --dist loadgroup): each file is one group, kept on
# one process, except the files that start Ray, which share a group so that no two Ray instances
# run at once (test_ray_cluster joins "any running Ray" and would join another file's).
RAY_FILES = {"test_ray_cluster.py", "test_ray_vec_env.py", "test_sweep.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if name in RAY_FILES else name))
