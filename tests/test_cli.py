"""The CLI: bad input fails with a named field, exit != 0, before weights load, nothing written."""

import json

import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app

runner = CliRunner()


def _schedule(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return str(p)


GOOD_PHASE = "phases: [{fraction: 1.0, tools: {sft: {share: 1}}}]"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "proxy-tiyn"], "Did you mean 'proxy-tiny'"),
        (["--model", "/no/such/model"], "does not exist"),
        (["--schedule", "expret"], "Did you mean 'expert'"),
        (["--suite", "styl-vs-truth"], "Did you mean 'style-vs-truth'"),
        (["--steps", "0"], "training.total_steps: got 0"),
        (["--set", "training.layer_groups=0"], "layer_groups: got 0"),
    ],
)
def test_bad_options(tmp_path, no_weights, args, needle):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run-schedule", "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("schema_version: 1\nphases: [{fraction: 1.0, tools: {sfft: {share: 1}}}]", "Did you mean 'sft'"),
        (
            "schema_version: 1\nphases: [{fraction: 1.0, tools: {sft: {share: 1, output: -1}}}]",
            "allowed range is [0, 2]",
        ),
        ("schema_version: 1\nphases: [{fraction: 1.0, tools: {sft: {share: 1, output: .nan}}}]", "finite"),
        ("schema_version: 1\nphases: [{fraction: 0.6, tools: {sft: {share: 1}}}]", "sum to 0.6"),
        (f"schema_version: 1\nlayer_groups: 0\n{GOOD_PHASE}", "layer_groups: got 0"),
        (f"schema_version: 3\n{GOOD_PHASE}", "schema_version 3 is not supported"),
    ],
)
def test_bad_schedules(tmp_path, no_weights, text, needle):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run-schedule", "--out", str(out), "--schedule", _schedule(tmp_path, text)])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "s.yaml" in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    "dpo_text, needle",
    [
        (
            '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n',
            "dpo.jsonl:2: malformed JSON",
        ),
        ('{"prompt": "a", "chosen": "b"}\n', "dpo.jsonl:1: dpo row is missing field 'rejected'"),
    ],
)
def test_bad_user_data(tmp_path, no_weights, dpo_text, needle):
    suite = tmp_path / "suite"
    (suite / "eval").mkdir(parents=True)
    (suite / "suite.yaml").write_text(
        "behaviours: [{name: truth, tool: dpo}]\ndata: {dpo: dpo.jsonl}\n"
        "evals: {target: {truth: eval/p.jsonl}, heldout: {truth: eval/p.jsonl}, observe: {truth: eval/o.jsonl}}\n"
        "retain: eval/r.jsonl\n"
    )
    (suite / "dpo.jsonl").write_text(dpo_text)
    (suite / "eval" / "p.jsonl").write_text(json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    (suite / "eval" / "o.jsonl").write_text(json.dumps({"prompt": "2+2=", "chosen": " 4.", "rejected": " 5."}) + "\n")
    (suite / "eval" / "r.jsonl").write_text("".join(json.dumps({"text": f"the cat sat {n}."}) + "\n" for n in range(2)))
    sched = _schedule(tmp_path, "schema_version: 1\nphases: [{fraction: 1.0, tools: {dpo: {share: 1}}}]")
    out = tmp_path / "run"
    res = runner.invoke(app, ["run-schedule", "--out", str(out), "--suite", str(suite), "--schedule", sched])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not out.exists()


def test_models_lists_builtins():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    for name in ("proxy-tiny", "proxy-large", "smollm2-135m"):
        assert name in res.output


def test_run_schedule_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run-schedule", "--out", str(out), "--schedule", "default", "--steps", "8", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "composite" in res.output
    for name in (
        "config.yaml",
        "schedule.yaml",
        "scores.jsonl",
        "adapters/sft/adapter_config.json",
        "adapters/dpo/adapter_model.safetensors",
    ):
        assert (out / name).exists(), name
    assert list((out / "tb").glob("events.out.tfevents.*")), "TensorBoard events missing"
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == [-1, 0, 1]
