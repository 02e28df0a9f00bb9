"""The README's table of bad inputs: each row is a case here, failing with its named error before
any weights load and before anything is written; and the one rule for output directories."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.rundir import WRITES, claim_output, holding

ROOT = Path(__file__).resolve().parents[1]
BAD_SCHEDULE = "schema_version: 1\nphases: [{fraction: 0.6, tools: {sft: {share: 1}}}]\n"
TINY_TC = [
    "--set", "total_episodes=2", "--set", "n_envs=1", "--set", "ppo.group_size=1", "--set", "ppo.antithetic=false",
]
EMPTY_CHOSEN = (
    '{"prompt": "1+1=", "chosen": "", "rejected": " 3."}\n{"prompt": "2+1=", "chosen": " 3.", "rejected": " 4."}\n'
)


def _suite(root: Path, dpo: str = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n', probe: str | None = None) -> str:
    (root / "eval").mkdir(parents=True)
    (root / "suite.yaml").write_text(
        "behaviours: [{name: truth, tool: dpo}]\ndata: {dpo: dpo.jsonl}\n"
        "evals: {target: {truth: eval/t.jsonl}, heldout: {truth: eval/h.jsonl}}\nretain: eval/r.jsonl\n"
    )
    (root / "dpo.jsonl").write_text(dpo)
    rows = [{"prompt": f"{a}+1=", "chosen": " 2.", "rejected": " 3."} for a in range(4)]
    (root / "eval" / "t.jsonl").write_text(probe or "".join(json.dumps(r) + "\n" for r in rows))
    (root / "eval" / "h.jsonl").write_text(json.dumps({"prompt": "9+9=", "chosen": " 18.", "rejected": " 8."}) + "\n")
    (root / "eval" / "r.jsonl").write_text("".join(json.dumps({"text": f"text {n}."}) + "\n" for n in range(4)))
    return str(root)


def _file(root: Path, name: str, text: str) -> str:
    (root / name).write_text(text)
    return str(root / name)


def _folder(root: Path, files: dict[str, str]) -> str:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return str(root)


# (README row, the command line given tmp_path, a part of the message)
CASES = [
    ("YAML syntax error in `--set`",
     lambda p: ["run-schedule", "--set", "training.total_steps=[1,"], "is not valid YAML"),
    ("YAML syntax error in a config file",
     lambda p: ["run-schedule", "--config", _file(p, "c.yaml", "training: {total_steps: [1,\n")], "not valid YAML"),
    ("YAML syntax error in `suite.yaml`",
     lambda p: ["run-schedule", "--suite", _folder(p / "s", {"suite.yaml": "behaviours: [\n"})],
     "suite.yaml: not valid YAML"),
    ("a malformed `env.prior` schedule",
     lambda p: ["train-controller", *TINY_TC, "--set", f"env.prior={_file(p, 'p.yaml', BAD_SCHEDULE)}"],
     "phase fractions sum to 0.6"),
    ("a malformed `--compare` schedule (train-controller)",
     lambda p: ["train-controller", *TINY_TC, "--set", f"compare=[{_file(p, 'c.yaml', BAD_SCHEDULE)}]"],
     "phase fractions sum to 0.6"),
    ("a malformed `--compare` schedule (transfer)",
     lambda p: ["transfer", str(ROOT / "configs" / "schedules" / "expert.yaml"), "--model", "proxy-tiny",
                "--compare", _file(p, "c.yaml", BAD_SCHEDULE)], "phase fractions sum to 0.6"),
    ("malformed JSONL in a user suite (train-controller)",
     lambda p: ["train-controller", *TINY_TC, "--set", f"run.suite={_suite(p / 's', dpo='{oops')}"],
     "dpo.jsonl:1: malformed JSON"),
    ("an empty probe completion",
     lambda p: ["run-schedule", "--suite", _suite(p / "s", probe=EMPTY_CHOSEN),
                "--schedule", _file(p, "d.yaml", "schema_version: 1\nphases: [{fraction: 1.0, tools: {dpo: {}}}]\n")],
     "t.jsonl:1: chosen needs at least one non-empty completion"),
    ("more layer groups than the model has layers",
     lambda p: ["run-schedule", "--set", "training.layer_groups=8", "--schedule",
                _file(p, "g.yaml", "schema_version: 1\nlayer_groups: 8\nphases: [{fraction: 1.0, tools: {sft: {}}}]")],
     "too few for layer_groups=8"),
    ("`--out` holding files metactl did not write",
     lambda p: ["run-schedule", "--out", _folder(p / "mine", {"notes.txt": "mine"})],
     "run-schedule never writes over them"),
]


@pytest.mark.parametrize("row, argv, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_before_weights_load_and_nothing_is_written(tmp_path, no_weights, row, argv, needle):
    args = argv(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output, res.output
    assert "Traceback" not in res.output
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before, "something was written"


def test_every_bad_input_case_is_a_row_of_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| `(.+?)` \|$", section, re.MULTILINE)
    assert [r[0] for r in rows] == [c[0] for c in CASES]
    assert [r[1] for r in rows] == [c[2] for c in CASES]


@pytest.mark.parametrize("command", sorted(WRITES))
def test_one_rule_for_output_dirs(tmp_path, command):
    """A new run needs an empty dir; a run of the same command resumes or is replaced only on
    request; anything else is refused and no file the command did not write is deleted."""
    out = tmp_path / "out"
    assert claim_output(out, command) is False  # missing: new
    mine = next(iter(sorted(WRITES[command])))
    # A run of this command, as its files show it.
    signature = {"run-schedule": {"config.yaml": "model: proxy-tiny\n", "scores.jsonl": "", "schedule.yaml": ""},
                 "train-controller": {"config.yaml": "policy: ppo\n"},
                 "transfer": {"config.yaml": "source: x\nmode: schedule\n"},
                 "sweep": {"sweep.yaml": "grid: {}\n"},
                 "inspect": {"report.json": "{}"}}[command]
    out.mkdir()
    for name, text in signature.items():
        (out / name).write_text(text)
    with pytest.raises(ConfigError, match="--overwrite"):
        claim_output(out, command)
    assert claim_output(out, command, resume=True) is True
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt, which .* did not write"):
        claim_output(out, command, overwrite=True)
    assert (out / "notes.txt").is_file() and all((out / n).is_file() for n in signature)
    (out / "notes.txt").unlink()
    claim_output(out, command, overwrite=True)
    assert not any(out.iterdir()), mine
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="never writes over them"):
        claim_output(other, command, resume=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_a_run_dir_another_process_is_writing_is_refused_and_left_alone(tmp_path):
    """Two processes on one run dir (a --resume typed while the run still goes) would append to the same
    files: the second is refused before it touches anything, and the dir is free again once the first ends."""
    out = tmp_path / "run"
    hold = ("import sys, time; from pathlib import Path; from metactl.rundir import holding\n"
            "with holding(Path(sys.argv[1]), 'train-controller'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(app, ["train-controller", "--out", str(out), *TINY_TC])
        assert res.exit_code == 2, res.output
        assert "another process is writing a train-controller run there now" in res.output
        assert f"--resume {out}" in res.output
        assert not any(out.iterdir())  # nothing written, nothing removed
    finally:
        holder.kill()
        holder.wait()
    with holding(out, "train-controller"):  # a killed holder releases it
        pass
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError, match="another process"), holding(fresh, "inspect"), holding(fresh, "inspect"):
        pass
    assert not fresh.exists()  # created for the attempt, left empty: removed again


def test_run_schedule_out_on_a_folder_with_an_unrelated_file_keeps_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["run-schedule", "--out", str(out), "--steps", "4", "--quiet"])
    assert res.exit_code == 2 and "never writes over them" in res.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    # A finished run is replaced only on request.
    run = tmp_path / "run2"
    assert CliRunner().invoke(app, ["run-schedule", "--out", str(run), "--steps", "4", "--quiet"]).exit_code == 0
    again = CliRunner().invoke(app, ["run-schedule", "--out", str(run), "--steps", "4", "--quiet"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    over = CliRunner().invoke(app, ["run-schedule", "--out", str(run), "--steps", "4", "--quiet", "--overwrite"])
    assert over.exit_code == 0, over.output
