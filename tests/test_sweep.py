"""metactl sweep on Ray Tune: a grid over controller seeds, an Optuna search with repeats, resume,
and bad sweep configs refused before Ray starts.

Needs the ``tune`` extra (``pip install -e '.[tune]'``); without it these tests are skipped.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray.tune")

from metactl.commands.sweep.config import load_sweep_config, trial_config
from metactl.commands.sweep.run import run_sweep, trial_resources
from metactl.errors import ConfigError

pytestmark = pytest.mark.tune

TINY = ("set=[total_episodes=2, run.training.total_steps=4, env.phases=2, 'env.train_task_seeds=[0,2]', "
        "ppo.episodes_per_update=2, run.suite=style-vs-truth, run.training.score_probes=16, ppo.group_size=1, "
        "ppo.antithetic=false, {extra}]")


def _cfg(*overrides: str, extra: str = "n_envs=1"):
    return load_sweep_config(None, [TINY.format(extra=extra), "task_seeds=[2000]", "ray.num_cpus=2", *overrides])


def test_a_grid_over_seeds_runs_trials_with_env_actors_and_resumes(tmp_path):
    from metactl.commands.train_controller.run import train_controller

    cfg = _cfg("grid={seed: [0, 1]}", extra="n_envs=1, vec_env=ray")
    bundles = trial_resources(cfg).bundles
    assert bundles == [{"CPU": 1.0}] or bundles[1:] == [{"CPU": 1.0}], bundles  # the env actor's bundle
    res = run_sweep(cfg, tmp_path / "sweep", progress=False)
    assert res.errors == 0
    assert sorted(r["seed"] for r in res.rows) == [0, 1]
    for row in res.rows:
        run = tmp_path / "sweep" / "trials" / row["trial"]
        assert (run / "controller.zip").is_file() and (run / "schedule.yaml").is_file()
        assert row["metrics"]["episodes"] == 2
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| (all) | 2 | 0,1 |" in summary
    assert len((tmp_path / "sweep" / "results.jsonl").read_text().splitlines()) == 2

    # A trial is the plain train-controller run: the same settings outside Tune score the same.
    direct = train_controller(trial_config(cfg, {"seed": 1}), tmp_path / "direct", progress=False)
    seed1 = next(r for r in res.rows if r["seed"] == 1)
    composite = direct.evaluation.summary()["ppo"]["composite"][0]
    assert seed1["metrics"]["composite"] == pytest.approx(composite, abs=1e-9)

    # Resume: finished trials report their stored scores and train nothing.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "trials").glob("*/trial.json")}
    again = run_sweep(
        load_sweep_config(tmp_path / "sweep" / "sweep.yaml"), tmp_path / "sweep", resume=True, progress=False
    )
    assert sorted(r["seed"] for r in again.rows) == [0, 1]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_an_optuna_search_runs_each_proposal_under_several_seeds(tmp_path):
    cfg = _cfg(
        "grid={}",
        "search.space={ppo.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}}",
        "search.num_samples=2",
        "search.repeats=2",
        "max_concurrent=2",
    )
    res = run_sweep(cfg, tmp_path / "tpe", progress=False)
    assert res.errors == 0 and len(res.rows) == 4
    by_lr: dict[float, set[int]] = {}
    for r in res.rows:
        by_lr.setdefault(r["params"]["ppo.learning_rate"], set()).add(r["seed"])
        assert 1e-4 <= r["params"]["ppo.learning_rate"] <= 1e-2
    assert len(by_lr) == 2 and all(seeds == {0, 1} for seeds in by_lr.values())
    assert len(res.table) == 3  # header + one row per proposal, seeds pooled
    rows = [json.loads(x) for x in (tmp_path / "tpe" / "results.jsonl").read_text().splitlines()]
    assert {r["trial"] for r in rows} == {r["trial"] for r in res.rows}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["grid={seed: [0]}", "search.space={ppo.learning_rate: {uniform: [0.1, 0.2]}}"],
            "grid and search.space are both set",
        ),
        (["grid={}"], "grid and search.space are both empty"),
        (
            ["grid={}", "search.space={ppo.learning_rate: {lognormal: [0.1, 0.2]}}"],
            "unknown distribution 'lognormal'.*Did you mean 'loguniform'",
        ),
        (["grid={}", "search.space={ppo.learning_rate: {uniform: [0.2, 0.1]}}"], "high must be above low"),
        (["grid={ppo.learnin_rate: [0.1]}"], "learnin_rate: unknown option.*Did you mean 'learning_rate'"),
        (["grid={n_envs: [1, 2]}"], "cannot vary"),
        (["grid={seed: [0]}", "metric=gian"], "metric: unknown value 'gian'.*Did you mean 'gain'"),
        (["grid={policy: [ppo, ppo2]}"], "policy: unknown value 'ppo2'"),
    ],
)
def test_bad_sweep_configs_fail_before_ray_starts(overrides, message):
    import ray

    with pytest.raises(ConfigError, match=message):
        _cfg(*overrides)
    assert not ray.is_initialized()


def test_the_shipped_sweep_configs_load():
    from metactl.paths import CONFIGS

    modes = {p.stem: load_sweep_config(p).mode for p in sorted((CONFIGS / "sweep").glob("*.yaml"))}
    assert modes == {"bench": "grid", "ppo-tpe": "search", "seeds": "grid"}


def test_sweep_cli_refuses_bad_input_with_the_fix(tmp_path):
    from typer.testing import CliRunner

    from metactl.commands.cli import app

    res = CliRunner().invoke(app, ["sweep", "--set", "metric=gian", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "Did you mean 'gain'" in res.output
    res = CliRunner().invoke(app, ["sweep", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "not a sweep dir" in res.output
    assert not (tmp_path / "s").exists()


def test_trials_are_scored_on_their_own_suite_never_on_heldout_families():
    """A sweep selects settings by its trials' scores: the held-out task families that judge a
    controller (the default's eval_suites) must not be among them."""
    cfg = load_sweep_config(None, ["task_seeds=[2000]", "grid={seed: [0]}"])
    trial = trial_config(cfg, {"seed": 0})
    assert trial.eval_suites == [] and trial.compare == [] and trial.eval_task_seeds == [2000]
