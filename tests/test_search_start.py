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


def _run(out, episodes: int, *sets: str, resume: bool = False) -> None:
    args = ["--resume", str(out)] if resume else [
        "--episodes", str(episodes), "--out", str(out), *[x for s in [*TINY_PPO, *sets] for x in ("--set", s)]]
    res = CliRunner().invoke(app, ["train-controller", "--quiet", *args])
    assert res.exit_code == 0, res.output


def _phases(path) -> list:
    return Schedule.load(path).to_dict()["phases"]


def test_a_searched_start_is_the_search_then_ppo_around_what_it_kept(tmp_path):
    """One run with ppo.search_episodes=4 of 8 is, episode for episode, a 4-episode `random` run and then
    a 4-episode PPO run whose env.prior is the schedule that search kept; a run resumed after its search
    picks up PPO's stage without searching again; transfer and inspect read the run with that prior."""
    one = tmp_path / "one"
    _run(one, 8, "ppo.search_episodes=4")
    search, stage = tmp_path / "search", tmp_path / "stage"
    # The search stage leaves the population engine to PPO: policy random on its own default envs.
    _run(search, 4, "policy=random", "vec_env=auto", "n_envs=0")
    _run(stage, 4, f"env.prior={search / SCHEDULE}")

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
