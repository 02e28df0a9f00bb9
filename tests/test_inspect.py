"""metactl inspect: Shapley efficiency, schedule variants, per-layer readout, end to end, bad input."""

from __future__ import annotations

import base64
import itertools
import json
import random
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.commands.inspect.ablate import merged, swapped, tool_steps, without_phase
from metactl.commands.inspect.shapley import coalition_values, leave_one_out, shapley
from metactl.schedule import Schedule

TINY = [
    "n_envs=1", "run.training.total_steps=8", "env.phases=2", "env.train_task_seeds=[0,2]",
    "eval_task_seeds=[1000]", "compare=[default]", "ppo.episodes_per_update=2", "run.training.score_probes=16",
    "eval_suites=[]",
    "ppo.group_size=1", "ppo.antithetic=false",  # one env holds no mirrored pair
]
SECTIONS = [
    "Decisions",
    "Learning",
    "Attribution",
    "Order and repetition",
    "Why the policy chose it",
    "Interference and implantation",
]


def _train(out: Path, policy: str) -> Path:
    args = ["train-controller", "--policy", policy, "--episodes", "2", "--out", str(out), "--quiet"]
    for o in TINY:
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


# -- Shapley ----------------------------------------------------------------------------------------
def test_shapley_is_efficient_symmetric_and_ignores_dummies():
    rng = random.Random(0)
    players = ["sft", "dpo", "retain", "rl"]
    noise = {frozenset(c): rng.uniform(-1, 1) for k in range(5) for c in itertools.combinations(players, k)}

    def value(s: frozenset) -> dict[str, float]:
        core = s - {"rl"}  # rl is a dummy: it never changes the value
        return {
            "target": noise[frozenset(core)],
            "twin": 2.0 * ("sft" in s) + 2.0 * ("dpo" in s) + ("sft" in s and "dpo" in s),
        }

    table = coalition_values(players, value)
    phi = shapley(players, table)
    for key in ("target", "twin"):
        total = table[frozenset(players)][key] - table[frozenset()][key]
        assert sum(v[key] for v in phi.values()) == pytest.approx(total, abs=1e-12)
        assert phi["rl"][key] == pytest.approx(0.0, abs=1e-12)
    assert phi["sft"]["twin"] == pytest.approx(phi["dpo"]["twin"]) == pytest.approx(2.5)
    loo = leave_one_out(players, table)
    assert loo["rl"]["target"] == pytest.approx(0.0, abs=1e-12)


def test_schedule_variants_keep_every_tools_step_count():
    sched = Schedule.named("expert", 2)
    total = 96

    def counts(s: Schedule) -> dict[str, int]:
        return {t: sum(st.get(t, 0) for st in tool_steps(s, total)) for t in sched.tool_names}

    want = counts(sched)
    for i in range(len(sched.phases) - 1):
        assert counts(swapped(sched, i)) == want
    merged_any = False
    for t in sched.tool_names:
        m = merged(sched, t, total)
        if m is None:
            continue
        merged_any = True
        assert counts(m) == want
        assert sum(1 for st in tool_steps(m, total) if st.get(t, 0) > 0) == 1  # all its steps in one phase
    assert merged_any
    gone = without_phase(sched, 1)
    assert tool_steps(gone, total)[1] == dict.fromkeys(sched.tool_names, 0)
    assert tool_steps(gone, total)[0] == tool_steps(sched, total)[0]


# -- readout ----------------------------------------------------------------------------------------
def test_last_layer_readout_is_the_behaviour_score(engine):
    from metactl.commands.inspect.readout import layer_readout

    with engine.model.disable_adapter():
        readout = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
    n_layers = engine.model.get_base_model().config.num_hidden_layers
    for key, accs in readout.items():
        assert len(accs) == n_layers
        assert accs[-1] == pytest.approx(engine.task.base_scores[key], abs=1e-9), key


# -- end to end ---------------------------------------------------------------------------------------
class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.images: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self._in_h2 = True
        if tag == "img":
            self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("inspect") / "run", "ppo")


def test_inspect_a_ppo_run_end_to_end(ppo_run, tmp_path):
    import matplotlib.image

    out = tmp_path / "report"
    res = CliRunner().invoke(
        app, ["inspect", str(ppo_run), "--format", "html", "--out", str(out), "--workers", "1", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["policy"] == "ppo" and report["closed_loop"] and report["task_seed"] == 3000  # schedule_task_seed
    # Decisions: one row per phase and tool, taken from the greedy closed-loop rollout.
    phases = report["decisions"]["ppo"]["phases"]
    assert len(phases) == 2 and set(phases[0]["tools"]) == {"sft", "dpo", "retain"}
    assert sum(sum(p["tool_steps"].values()) for p in phases) <= 8
    # Learning: one point per training episode, default and random baselines.
    assert len(report["learning"]["curve"]["episode"]) == 2
    assert {"ppo", "default", "random"} <= set(report["learning"]["baselines"])
    # Attribution: Shapley over tools is efficient for every score, for learned and default.
    for label in ("ppo", "default"):
        a = report["attribution"][label]
        for key, total in a["total_change"].items():
            assert sum(v[key] for v in a["tools"]["shapley"].values()) == pytest.approx(total, abs=1e-9)
            assert sum(v[key] for v in a["groups"]["shapley"].values()) == pytest.approx(total, abs=1e-9)
        assert a["efficiency_gap"] < 1e-9
        assert set(a["phases"]) == {"phase 0", "phase 1"}
        assert a["final"]["composite"] != a["base"]["composite"]  # training changed the model
    assert report["retrained_episodes"] >= 4
    # Order: each adjacent swap was retrained.
    assert any(v["variant"] == "phases 0 and 1 swapped" for v in report["order"]["variants"])
    # Why: one saliency matrix per decision over every observation feature.
    steps = report["why"]["steps"]
    assert len(steps) == 2
    assert len(steps[0]["effect"]) == len(steps[0]["features"]) == len(steps[0]["observation"])
    assert any(abs(x) > 0 for row in steps[0]["effect"] for x in row)
    # Implantation: cosines before and after each phase, CKA and readout per layer.
    imp = report["implantation"]
    assert len(imp["cosines"]["ppo"]) == 3
    assert len(imp["cka"]["ppo"]) == report["layers"] == 4
    assert set(imp["readout"]) == {"base", "ppo", "default"}
    # Tables in the terminal, pictures on disk, one self-contained page.
    for png in ("decisions", "learning", "attribution", "order", "why", "implantation"):
        img = matplotlib.image.imread(out / f"{png}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.h2 == SECTIONS
    assert len(page.images) == 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # A rerun reuses the retrained variants instead of training them again; the terminal gets every table.
    res = CliRunner().invoke(app, ["inspect", str(ppo_run), "--out", str(out), "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    for section in SECTIONS:
        assert f"== {section} ==" in res.output
    assert "Shapley" in res.output and "swapped" in res.output
    again = json.loads((out / "report.json").read_text())
    assert again["retrained_episodes"] == 0
    assert again["order"] == report["order"]
    assert again["attribution"]["ppo"]["tools"] == report["attribution"]["ppo"]["tools"]


@pytest.mark.parametrize("policy", ["bandit", "random"])
def test_inspect_other_policies(tmp_path, policy):
    run = _train(tmp_path / "run", policy)
    res = CliRunner().invoke(
        app, ["inspect", str(run), "--format", "json", "--out", str(tmp_path / "r"), "--workers", "0", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    if policy == "bandit":  # one decision, over the whole schedule
        assert len(report["why"]["steps"]) == 1
        assert any(c.startswith("phase 1: ") for c in report["why"]["steps"][0]["controls"])
    else:
        assert "does not read observations" in report["why"]["note"]
    assert report["attribution"][policy]["efficiency_gap"] < 1e-9


# -- bad input ------------------------------------------------------------------------------------------
def test_inspect_rejects_bad_input_before_loading_weights(tmp_path, no_weights, ppo_run):
    cases = []
    cases.append(([str(tmp_path / "nope")], "is not a directory"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(([str(empty)], "no config.yaml"))
    sched_dir = tmp_path / "sched"
    sched_dir.mkdir()
    (sched_dir / "config.yaml").write_text("model: proxy-tiny\n")
    cases.append(([str(sched_dir)], "has no `policy:`"))
    cases.append(
        (
            [str(ppo_run), "--task-seed", "-1"],
            r"--task-seed: -1 is outside the task seeds the suites support, integers in \[0, 2147483647\]",
        )
    )
    cases.append(([str(ppo_run), "--task-seed", str(2**31)], "outside the task seeds"))
    cases.append(([str(ppo_run), "--format", "htm"], "Did you mean 'html'"))
    cases.append(([str(ppo_run), "--workers", "-1"], "--workers: -1 is negative"))
    for args, message in cases:
        res = CliRunner().invoke(app, ["inspect", *args, "--out", str(tmp_path / "o"), "--quiet"])
        assert res.exit_code == 2, (args, res.output)
        import re

        assert re.search(message, res.output), (args, res.output)
