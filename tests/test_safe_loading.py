"""Nothing a run dir holds is executed on load: a pickle planted in every file metactl reads back
(--resume, transfer, inspect) is refused with a named error or never unpickled; the marker file
its payload would create never appears."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metactl.commands.cli import app

TINY = [
    "n_envs=1", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,2]",
    "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2", "run.training.score_probes=16",
    "eval_suites=[]",
    "ppo.group_size=1", "ppo.antithetic=false",  # one env holds no mirrored pair
]


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for any code a crafted file could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _serialized(marker: Path) -> dict:
    return {":type:": "<class 'x'>", ":serialized:": base64.b64encode(pickle.dumps(Payload(marker))).decode()}


def _plant_in_zip(path: Path, marker: Path, key: str) -> None:
    """Replace (or add) the ``data`` entry ``key`` of an SB3 zip with a pickled payload."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    data = json.loads(members["data"])
    data[key] = _serialized(marker)
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safe") / "run"
    args = ["train-controller", "--episodes", "2", "--out", str(out), "--quiet"]
    for o in TINY:
        args += ["--set", o]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("key", ["clip_range", "observation_space", "a_new_entry"])
def test_pickles_in_controller_zips_are_never_unpickled(trained, tmp_path, key):
    """A payload under a key SB3 pickles is replaced by metactl's own object; under a key it does
    not know, the zip is refused by name. Through --resume (checkpoints), transfer and inspect."""
    run = shutil.copytree(trained, tmp_path / "run")
    marker = tmp_path / "marker"
    for zip_path in [run / "controller.zip", *run.glob("checkpoints/*/controller.zip")]:
        _plant_in_zip(zip_path, marker, key)
    # Old-format pickles beside them are never read either.
    for ckpt in run.glob("checkpoints/*"):
        (ckpt / "env_rngs.pkl").write_bytes(pickle.dumps(Payload(marker)))
    (run / "search.pkl").write_bytes(pickle.dumps(Payload(marker)))

    transfer = _cli("transfer", str(run), "--model", "proxy-tiny", "--mode", "policy", "--steps", "4",
                    "--task-seed", "1000", "--out", str(tmp_path / "t"), "--quiet")
    inspect = _cli("inspect", str(run), "--workers", "0", "--out", str(tmp_path / "i"), "--quiet") \
        if key == "a_new_entry" else None
    resume = _cli("train-controller", "--resume", str(run), "--quiet")
    assert not marker.exists(), "a planted pickle was executed"
    results = [r for r in (transfer, inspect, resume) if r is not None]
    for res in results:
        if key == "a_new_entry":
            assert res.exit_code == 2 and "a_new_entry" in res.output and "refused" in res.output, res.output
        else:
            assert res.exit_code == 0, res.output


def test_a_schedule_checkpoint_holding_a_pickle_is_refused(tmp_path):
    """run-schedule's phase checkpoint loads with torch.load(weights_only=True): a payload in it is
    refused by name, nothing runs, and the checkpoint is left where it was."""
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    partial.mkdir()
    marker = tmp_path / "marker"
    torch.save({"fingerprint": Payload(marker)}, partial / "checkpoint.pt")
    res = _cli("run-schedule", "--out", str(out), "--steps", "4", "--quiet")
    assert res.exit_code == 2 and "checkpoint" in res.output and "weights_only" in res.output, res.output
    assert not marker.exists() and (partial / "checkpoint.pt").is_file() and not out.exists()
