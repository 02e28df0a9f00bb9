"""ppo.weight_average: the saved controller is the mean of its last updates' weights; training is unchanged."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest
import torch
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.policies.weight_average import WEIGHT_AVERAGE_FILE, WeightAverage, averaged_updates
from metactl.rundir import SCORES, read_jsonl


def test_running_mean_round_trips_and_leaves_integer_entries(tmp_path):
    avg = WeightAverage()
    states = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)},
              {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}]
    with pytest.raises(RuntimeError, match="no weights"):
        avg.mean(states[0])
    for s in states:
        avg.add(s)
    mean = avg.mean(states[1])
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and mean["w"].dtype == torch.float32
    assert int(mean["n"]) == 9  # not averaged: taken from the state it is applied to
    avg.save(tmp_path / WEIGHT_AVERAGE_FILE)
    back = WeightAverage.load(tmp_path / WEIGHT_AVERAGE_FILE)
    assert back.count == 2 and torch.equal(back.mean(states[1])["w"], mean["w"])


@pytest.mark.parametrize(("updates", "fraction", "expected"), [(12, 0.33, 4), (12, 0.01, 1), (3, 1.0, 3), (1, 0.5, 1)])
def test_averaged_updates(updates, fraction, expected):
    assert averaged_updates(updates, fraction) == expected


@pytest.mark.parametrize("value", [-0.1, 1.5, "half"])
def test_weight_average_refuses_values_out_of_range(value):
    with pytest.raises(ConfigError, match="ppo.weight_average"):
        load_controller_config(None, ["vec_env=dummy", f"ppo.weight_average={value}"])


def _policy_weights(zip_path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(zip_path) as z:
        return torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)


def _train(out, fraction: float, resume: bool = False) -> None:
    sets = [
        "n_envs=2", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,16]",
        "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2", "run.training.score_probes=16",
        "eval_suites=[]", "vec_env=batched", "batched_processes=1", f"ppo.weight_average={fraction}",
        "ppo.search_episodes=0",
    ]
    new = ["--episodes", "4", "--out", str(out), *[x for s in sets for x in ("--set", s)]]
    args = ["--resume", str(out)] if resume else new
    res = CliRunner().invoke(app, ["train-controller", "--quiet", *args])
    assert res.exit_code == 0, res.output


def test_the_saved_controller_is_the_mean_of_the_last_updates_and_resumes_to_it(tmp_path):
    """Two updates, both averaged: the run trains exactly as without averaging (same episodes, same
    weights after each update), and its controller is the mean of its two checkpoints' weights. A
    run resumed from the first checkpoint carries that checkpoint's share of the mean (resume is not
    bit-exact, so its second update differs: the mean is checked against its own checkpoints)."""
    plain, averaged = tmp_path / "plain", tmp_path / "averaged"
    _train(plain, 0.0)
    _train(averaged, 1.0)
    assert read_jsonl(plain / SCORES) == read_jsonl(averaged / SCORES)
    ckpts = sorted((averaged / "checkpoints").glob("ckpt-*"))
    assert [c.name for c in ckpts] == ["ckpt-000002", "ckpt-000004"]
    first, last = (_policy_weights(c / "controller.zip") for c in ckpts)
    for key, value in _policy_weights(plain / "controller.zip").items():
        assert torch.equal(value, last[key])  # training untouched
    saved = _policy_weights(averaged / "controller.zip")
    moved = [k for k in saved if saved[k].is_floating_point() and not torch.equal(first[k], last[k])]
    assert moved, "the two updates left the policy where it was"
    _assert_mean(saved, first, last, moved)
    assert (ckpts[0] / WEIGHT_AVERAGE_FILE).is_file() and not (averaged / WEIGHT_AVERAGE_FILE).exists()

    again = tmp_path / "again"
    shutil.copytree(averaged, again)
    shutil.rmtree(again / "checkpoints" / "ckpt-000004")
    _train(again, 1.0, resume=True)
    resumed_last = _policy_weights(again / "checkpoints" / "ckpt-000004" / "controller.zip")
    _assert_mean(_policy_weights(again / "controller.zip"), first, resumed_last, moved)


def _assert_mean(saved, first, last, keys) -> None:
    for key in keys:
        torch.testing.assert_close(saved[key], ((first[key].double() + last[key].double()) / 2).float())
