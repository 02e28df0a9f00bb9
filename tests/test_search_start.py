"""ppo.search_episodes: random search first, then PPO around the schedule it kept, in one run dir."""

from __future__ import annotations

import shutil

import pytest
from conftest import TINY_PPO
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.rundir import CONTROLLER, SCHEDULE, SCORES, SEARCH_DIR, read_jsonl
from metactl.schedule import Schedule

pytestmark = pytest.mark.xdist_group("search_start")


def _run(out, episodes: int, *sets: str, resume: bool = False) -> str:
    args = ["--resume", str(out)] if resume else [
        "--episodes", str(episodes), "--out", str(out), *[x for s in [*TINY_PPO, *sets] for x in ("--set", s)]]
    res = CliRunner().invoke(app, ["train-controller", "--quiet", *args])
    assert res.exit_code == 0, res.output
    return res.output


def _phases(path) -> list:
    return Schedule.load(path).to_dict()["phases"]


def test_a_searched_start_is_the_search_then_ppo_around_what_it_kept(tmp_path):
    """One run with ppo.search_episodes=4 of 8 is, episode for episode, a 4-episode `random` run and then
    a 4-episode PPO run whose env.prior is the schedule that search kept; a run resumed after its search
    picks up PPO's stage without searching again; transfer and inspect read the run with that prior."""
    one = tmp_path / "one"
    said = _run(one, 8, "ppo.search_episodes=4")
    assert "8 episodes (the first 4 a random search, then PPO)" in said and "search/ (the search stage)" in said
    search, stage = tmp_path / "search", tmp_path / "stage"
    # The search stage leaves the population engine to PPO: policy random on its own default envs.
    _run(search, 4, "policy=random", "vec_env=auto", "n_envs=0")
    _run(stage, 4, f"env.prior={search / SCHEDULE}", "ppo.search_episodes=0")

    assert read_jsonl(one / SEARCH_DIR / SCORES) == read_jsonl(search / SCORES)
    assert _phases(one / SEARCH_DIR / SCHEDULE) == _phases(search / SCHEDULE)
    assert read_jsonl(one / SCORES) == read_jsonl(stage / SCORES)
    assert len(read_jsonl(one / SCORES)) == 4 * 2  # PPO's 4 episodes, 2 phases each
    assert _phases(one / SCHEDULE) == _phases(stage / SCHEDULE)
    assert load_controller_config(one / "config.yaml").ppo.search_episodes == 4  # the user's config is kept

    resumed = tmp_path / "resumed"  # killed after the search, before PPO's first checkpoint
    resumed.mkdir()
    shutil.copy(one / "config.yaml", resumed / "config.yaml")
    shutil.copytree(one / SEARCH_DIR, resumed / SEARCH_DIR)
    _run(resumed, 8, resume=True)
    assert read_jsonl(resumed / SEARCH_DIR / SCORES) == read_jsonl(one / SEARCH_DIR / SCORES)
    assert read_jsonl(resumed / SCORES) == read_jsonl(one / SCORES)

    from metactl.commands.inspect.source import load_run_dir
    from metactl.commands.transfer.source import load_source

    prior = str(one / SEARCH_DIR / SCHEDULE)
    assert load_source(one, "policy").env.prior == prior
    assert load_run_dir(one).config.env.prior == prior
    assert load_run_dir(one).prior == "the schedule its search stage kept, search/schedule.yaml"
    assert load_run_dir(stage).prior == f"env.prior {str(search / SCHEDULE)!r}"  # a prior given by hand
    assert (one / CONTROLLER).is_file()


@pytest.mark.parametrize(("sets", "message"), [
    (["policy=bandit", "ppo.search_episodes=4"], "policy 'bandit' does not start from a search"),
    (["total_episodes=8", "ppo.search_episodes=8"], "leaves 0 for PPO"),
    (["env.merge=[sft]", "vec_env=subproc", "ppo.search_episodes=4"], "a prior may not merge"),
    (["ppo.search_episodes=-1"], "ppo.search_episodes"),
])
def test_a_search_start_it_cannot_run_is_refused_with_the_fix(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_controller_config(None, ["vec_env=dummy", "total_episodes=16", *sets])


@pytest.mark.parametrize(("sets", "searched"), [
    ([], 8),  # auto: half of 16, PPO keeps 8 (episodes_per_update defaults to 8)
    (["total_episodes=15"], 7),  # half, rounded down: PPO keeps 8
    (["total_episodes=12"], 0),  # the other half (6) holds no PPO update: PPO alone
    (["policy=bandit"], 0),
    (["env.merge=[sft]", "vec_env=subproc"], 0),  # a searched prior may not merge
    (["ppo.search_episodes=0"], 0),
    (["ppo.search_episodes=4"], 4),
])
def test_auto_searches_half_the_budget_where_ppo_keeps_an_update(sets, searched):
    cfg = load_controller_config(None, ["vec_env=dummy", "total_episodes=16", *sets])
    assert cfg.resolved_search_episodes() == searched


def test_the_default_config_searches_half_its_budget_first():
    from metactl.paths import CONFIGS

    cfg = load_controller_config(CONFIGS / "train" / "default.yaml")
    assert cfg.ppo.search_episodes == "auto" and cfg.resolved_search_episodes() == cfg.total_episodes // 2


def test_a_word_other_than_auto_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="'half' is neither 'auto' nor a number of episodes"):
        load_controller_config(None, ["ppo.search_episodes=half"])
    with pytest.raises(ConfigError, match="Did you mean 'auto'"):
        load_controller_config(None, ["ppo.search_episodes=Auto"])


def test_a_run_dir_from_before_the_search_stage_reads_as_ppo_alone(tmp_path):
    """A config.yaml without ppo.search_episodes was written when PPO always ran alone: it must not
    read as today's `auto` (which would point the prior at a search that never ran)."""
    from metactl.commands.train_controller.search_start import load_run_config

    cfg = load_controller_config(None, ["total_episodes=16"])
    text = "".join(line for line in cfg.to_commented_yaml().splitlines(True) if "search_episodes" not in line)
    (tmp_path / "config.yaml").write_text(text)
    old = load_run_config(tmp_path)
    assert old.ppo.search_episodes == 0 and old.env.prior == cfg.env.prior and old.total_episodes == 16
