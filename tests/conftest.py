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
