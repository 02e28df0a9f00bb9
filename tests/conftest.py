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


# The smallest train-controller run that still trains mirrored pairs under the population engine:
# what the PPO-option tests (ppo.obs_noise, ppo.smooth) compare with and without their option.
TINY_PPO = [
    "n_envs=2", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,16]",
    "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2", "ppo.group_size=2",
    "ppo.antithetic=true", "run.training.score_probes=16", "eval_suites=[]", "vec_env=batched",
    "batched_processes=1",
    # PPO alone from the first episode (tests/test_search_start.py runs the default's search first).
    "ppo.search_episodes=0",
]


@pytest.fixture()
def tiny_ppo_run():
    """``run(out, episodes, *sets)``: train-controller on TINY_PPO plus ``sets``; its scores.jsonl rows."""
    from typer.testing import CliRunner

    from metactl.commands.cli import app
    from metactl.rundir import SCORES, read_jsonl

    def run(out, episodes: int, *sets: str) -> list[dict]:
        args = [x for s in [*TINY_PPO, *sets] for x in ("--set", s)]
        res = CliRunner().invoke(app, ["train-controller", "--episodes", str(episodes), "--out", str(out), "--quiet",
                                       *args])
        assert res.exit_code == 0, res.output
        return read_jsonl(out / SCORES)

    return run


# Tests run one process per core (pytest-xdist, --dist loadgroup): each file is one group, kept on
# one process, except the files that start Ray, which share a group so that no two Ray instances
# run at once (test_ray_cluster joins "any running Ray" and would join another file's).
RAY_FILES = {"test_ray_cluster.py", "test_ray_vec_env.py", "test_sweep.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if name in RAY_FILES else name))
