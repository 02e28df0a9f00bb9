"""search.keep: which schedule the search policies (and ppo's search stage) keep from their episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.policies.search import RERUNS, RandomSearch, Trial
from metactl.rundir import SCORES, SEARCH_STATE, read_jsonl
from metactl.schedule import Schedule

pytestmark = pytest.mark.xdist_group("search_keep")

TINY_SEARCH = [
    "policy=random", "n_envs=2", "vec_env=subproc", "run.training.total_steps=4", "env.phases=2",
    "env.train_task_seeds=[0,16]", "eval_task_seeds=[1000]", "compare=[]", "run.training.score_probes=16",
    "eval_suites=[]",
]


def _searcher(keep: str, trials: list[Trial]) -> RandomSearch:
    cfg = load_controller_config(None, ["policy=random", "vec_env=dummy", "total_episodes=12",
                                        f"search.keep={keep}", "search.reevaluate=0.34"])
    policy = RandomSearch(cfg)
    policy.trials = trials
    return policy


def _trial(i: int, reward: float, group: str, rerun_of: int = -1) -> Trial:
    return Trial(np.full(3, float(i)), reward, group, rerun_of)


# Eight new candidates on two families whose gains sit a whole unit apart, then two run twice more.
FRESH = [(1.2, "easy"), (1.0, "easy"), (1.1, "easy"), (1.0, "easy"),
         (0.0, "hard"), (0.6, "hard"), (0.1, "hard"), (0.0, "hard")]


def test_the_best_single_episode_is_the_easy_familys():
    policy = _searcher("episode", [_trial(i, r, g) for i, (r, g) in enumerate(FRESH)])
    assert policy.budget() == (12, 0)
    assert policy.best_index() == 0


def test_reevaluated_ranks_within_families_and_keeps_the_best_mean_of_the_reruns():
    trials = [_trial(i, r, g) for i, (r, g) in enumerate(FRESH)]
    policy = _searcher("reevaluated", trials)
    assert policy.budget() == (8, 2)  # int(12 * 0.34) = 4 episodes: 2 candidates, RERUNS = 2 each
    # Centred on its family's median (easy 1.05, hard 0.05): candidate 5 (+0.55) is first, then 0 (+0.15).
    assert policy.top(2) == [5, 0]
    # Before any rerun, the best centred single episode is kept, not the easy family's highest gain.
    assert policy.best_index() == 5
    policy.trials = trials + [_trial(5, 0.9, "easy", 5), _trial(5, -0.1, "hard", 5),
                              _trial(0, 1.5, "easy", 0), _trial(0, 0.5, "hard", 0)]
    # Means of the centred gains over three episodes: 5 -> (0.55 - 0.15 - 0.15) / 3, 0 -> (0.15 + 0.45 + 0.45) / 3.
    assert policy.best_index() == 0
    assert np.array_equal(policy.best_action(), np.zeros(3))
    assert RERUNS == 2


def test_a_search_state_round_trips_and_an_old_one_reads_as_new_candidates(tmp_path):
    trials = [_trial(i, r, g) for i, (r, g) in enumerate(FRESH)] + [_trial(5, 0.9, "easy", 5)]
    policy = _searcher("reevaluated", trials)
    policy.space = type("Space", (), {"dim": 3})()
    policy.rng = np.random.default_rng(0)
    policy.save(tmp_path)
    again = _searcher("reevaluated", [])
    again.space = policy.space
    again.load(tmp_path)
    assert [(t.reward, t.group, t.rerun_of) for t in again.trials] == [(t.reward, t.group, t.rerun_of) for t in trials]
    assert all(np.array_equal(a.action, b.action) for a, b in zip(again.trials, trials))

    state = json.loads((tmp_path / SEARCH_STATE).read_text())
    state["trials"] = [row[:2] for row in state["trials"]]  # the format before families were kept
    (tmp_path / SEARCH_STATE).write_text(json.dumps(state))
    again.load(tmp_path)
    assert [(t.group, t.rerun_of) for t in again.trials] == [("", -1)] * len(trials)


@pytest.mark.parametrize(("sets", "message"), [
    (["search.keep=reevaluate"], "Did you mean 'reevaluated'"),
    (["search.keep=best"], "allowed: episode, reevaluated"),
    (["search.reevaluate=0.95"], "search.reevaluate"),
    (["search.reevaluate=-0.1"], "search.reevaluate"),
])
def test_a_bad_search_setting_is_refused_with_the_fix(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_controller_config(None, ["vec_env=dummy", *sets])


def test_a_run_dir_from_before_search_keep_reads_as_the_best_episode(tmp_path):
    from metactl.commands.train_controller.search_start import load_run_config

    cfg = load_controller_config(None, ["total_episodes=16", "search.keep=reevaluated"])
    lines = cfg.to_commented_yaml().splitlines(True)
    start = next(i for i, line in enumerate(lines) if line.startswith("search:"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith((" ", "#")))
    (tmp_path / "config.yaml").write_text("".join(lines[:start] + lines[end:]))
    assert load_run_config(tmp_path, acting=False).search.keep == "episode"


def _search(out, keep: str) -> tuple[list[dict], list[list], Schedule]:
    args = [x for s in [*TINY_SEARCH, f"search.keep={keep}", "search.reevaluate=0.34"] for x in ("--set", s)]
    res = CliRunner().invoke(app, ["train-controller", "--quiet", "--episodes", "12", "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    trials = json.loads((out / SEARCH_STATE).read_text())["trials"]
    return read_jsonl(out / SCORES), trials, Schedule.load(out / "schedule.yaml")


def test_reevaluated_changes_only_the_tail_of_the_search_and_reruns_the_top_candidates(tmp_path):
    """The same seed draws the same first candidates and tasks under either rule; the reevaluated
    search spends its last episodes on its best candidates again, on other task draws, and keeps the
    one whose mean centred gain is highest."""
    plain_rows, plain, _ = _search(tmp_path / "episode", "episode")
    all_rows, trials, kept = _search(tmp_path / "reevaluated", "reevaluated")
    rows = [r for r in all_rows if r["return"] is not None]
    plain_rows = [r for r in plain_rows if r["return"] is not None]
    assert len(trials) == len(plain) == 12
    assert trials[:8] == plain[:8] and all(t[3] == -1 for t in plain)
    assert [r["episode_seed"] for r in rows[:8]] == [r["episode_seed"] for r in plain_rows[:8]]
    reruns = trials[8:]
    assert [t[3] for t in reruns[::RERUNS]] == [t[3] for t in reruns[1::RERUNS]]  # each candidate twice
    assert all(t[0] == trials[t[3]][0] and t[3] < 8 for t in reruns)
    assert len({r["task_seed"] for r in rows}) > 1
    policy = _searcher("reevaluated", [Trial(np.asarray(a), r, g, j) for a, r, g, j in trials])
    best = policy.best_index()
    assert best in {t[3] for t in reruns}  # a candidate that ran again, judged on all three of its episodes
    ran = sorted((r for r in all_rows if r["episode"] == best), key=lambda r: r["phase"])
    assert [p["tools"]["dpo"]["share"] for p in kept.to_dict()["phases"]] == pytest.approx(
        [r["controls"]["dpo"]["share"] for r in ran], abs=1e-5)
