"""ppo.curriculum: prioritized replay of training families or tasks."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.envs.config import EnvConfig
from metactl.errors import ConfigError
from metactl.policies.config import load_controller_config
from metactl.policies.curriculum import CURRICULUM_FILE, TaskCurriculum, level_of, rank_priorities
from metactl.policies.group_relative import whole_episodes
from metactl.rundir import SCORES, read_jsonl


def test_rank_priorities():
    np.testing.assert_allclose(rank_priorities([None] * 4, 1.0, 0.0), [0.25] * 4)  # nothing scored: uniform
    h = np.array([1.0, 1 / 3, 1 / 2])
    np.testing.assert_allclose(rank_priorities([3.0, 1.0, 2.0], 1.0, 0.0), h / h.sum())
    np.testing.assert_allclose(rank_priorities([3.0, 1.0, 2.0], 1.0, 1.0), [1 / 3] * 3)
    # a level never scored ranks first, tied with the others never scored
    p = rank_priorities([None, 5.0, None], 1.0, 0.0)
    assert p[0] == p[2] > p[1]
    # a low temperature draws the top level almost always
    assert rank_priorities([1.0, 2.0, 0.5], 0.05, 0.0)[1] > 0.999


def test_levels_are_families_of_a_mixture_and_seeds_of_one_suite():
    fam = level_of("train-families-wide", "family")
    assert [fam(s) for s in range(5)] == [
        "style-vs-truth", "format-vs-truth", "wrap-vs-keep", "refuse-vs-help", "style-vs-truth"]
    assert level_of("style-vs-truth", "family")(7) == 7  # one family: its task seeds
    assert level_of("train-families", "task")(7) == 7


def test_family_weights_spread_evenly_over_the_family_seeds():
    cur = TaskCurriculum((0, 6), level_of("train-families", "family"), temperature=1.0, uniform=0.0)
    assert cur.weights() == pytest.approx([1 / 6] * 6)
    cur.scores = {"style-vs-truth": 0.3, "format-vs-truth": 0.1, "wrap-vs-keep": 0.2}
    w = np.array(cur.weights())
    h = np.array([1.0, 1 / 3, 1 / 2]) / (1 + 1 / 3 + 1 / 2)
    np.testing.assert_allclose(w, np.tile(h / 2, 2))  # seeds s and s + 3 are one family's two tasks


def test_whole_episodes_skips_those_cut_by_the_rollout_edge():
    starts = np.array([[1], [0], [1], [0], [1]])
    dones = np.array([[0], [1], [0], [1], [0]])
    keys = [["a"], ["a"], ["b"], ["b"], ["c"]]
    assert list(whole_episodes(starts, dones, keys)) == [(0, 0, 1, "a"), (0, 2, 3, "b")]


def test_the_env_draws_by_its_task_weights():
    from metactl import envs
    from metactl.config import load_config

    run = load_config(None, ["training.total_steps=8", "training.score_probes=8"])
    env = envs.PhaseControlEnv(run, EnvConfig(phases=2, train_task_seeds=[0, 4], quick_probes=4))
    env.set_task_weights([0.0, 0.0, 1.0, 0.0])
    seen = set()
    for seed in range(5):
        env.reset(seed=seed)
        seen.add(env.task_seed)
    assert seen == {2}
    with pytest.raises(ValueError, match="one per task seed"):
        env.set_task_weights([1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        env.set_task_weights([1.0, -1.0, 0.0, 0.0])


class _Envs:
    def __init__(self) -> None:
        self.calls = []

    def env_method(self, name, *args, **kwargs):
        self.calls.append((name, args))


def test_a_rollout_scores_each_family_by_its_mean_absolute_advantage():
    """Two envs, two whole episodes each of one step; the scores are what the buffer's advantages
    say, and the envs get the new draw."""
    cur = TaskCurriculum((0, 6), level_of("train-families", "family"), temperature=1.0, uniform=0.0)
    buf = SimpleNamespace(buffer_size=2, n_envs=2, pos=0, episode_starts=np.ones((2, 2)),
                          advantages=np.array([[0.5, -0.1], [-0.3, 0.2]]))
    envs_ = _Envs()
    cur.model = SimpleNamespace(rollout_buffer=buf, logger=SimpleNamespace(record=lambda *a: None),
                                get_env=lambda: envs_)
    cur.locals = {}
    cur._on_rollout_start()
    for pos, seeds in enumerate([(0, 1), (3, 2)]):  # style, format; style, wrap
        buf.pos = pos
        cur.locals = {"infos": [{"task_seed": s} for s in seeds], "dones": [True, True]}
        cur._on_step()
    cur._on_rollout_end()
    assert cur.scores == pytest.approx({"style-vs-truth": 0.4, "format-vs-truth": 0.1, "wrap-vs-keep": 0.2})
    (name, (weights,)), = envs_.calls
    assert name == "set_task_weights" and weights == pytest.approx(cur.weights())
    assert weights[0] == weights[3] == max(weights)  # style-vs-truth's two seeds, ranked first


@pytest.mark.parametrize(("key", "value", "match"), [
    ("ppo.curriculum", "famly", "Did you mean 'family'"),
    ("ppo.curriculum_temperature", "0", "ppo.curriculum_temperature"),
    ("ppo.curriculum_uniform", "1.5", "ppo.curriculum_uniform"),
])
def test_bad_curriculum_settings_are_refused(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_controller_config(None, ["vec_env=dummy", f"{key}={value}"])


def _train(out, resume: bool = False) -> None:
    sets = [
        "n_envs=2", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,6]",
        "run.suite=train-families", "eval_task_seeds=[1000]", "compare=[]", "ppo.episodes_per_update=2",
        "run.training.score_probes=16", "eval_suites=[]", "vec_env=batched", "batched_processes=1",
        "ppo.curriculum=family", "ppo.search_episodes=0",
    ]
    new = ["--episodes", "6", "--out", str(out), *[x for s in sets for x in ("--set", s)]]
    args = ["--resume", str(out)] if resume else new
    res = CliRunner().invoke(app, ["train-controller", "--quiet", *args])
    assert res.exit_code == 0, res.output


def test_a_run_keeps_its_scores_in_every_checkpoint_and_resumes_with_them(tmp_path, monkeypatch):
    """Three updates of one mirrored pair each: each checkpoint holds the scores of the families
    drawn so far, and a run resumed from the second one hands the envs that checkpoint's draw
    before its first episode."""
    out = tmp_path / "run"
    _train(out)
    ckpts = sorted((out / "checkpoints").glob("ckpt-*"))
    assert [c.name for c in ckpts] == ["ckpt-000004", "ckpt-000006"]
    episodes = [r for r in read_jsonl(out / SCORES) if r["phase"] == 0]
    assert len(episodes) == 6
    drawn = {level_of("train-families", "family")(r["task_seed"]) for r in episodes}
    scores = {row["level"]: row["score"] for row in json.loads((ckpts[-1] / CURRICULUM_FILE).read_text())}
    assert set(scores) == drawn and all(v >= 0 for v in scores.values())

    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.rmtree(again / "checkpoints" / "ckpt-000006")
    saved = {row["level"]: row["score"] for row in json.loads(
        (again / "checkpoints" / "ckpt-000004" / CURRICULUM_FILE).read_text())}
    handed = []
    original = TaskCurriculum.apply

    def spy(self, venv):
        handed.append(dict(self.scores))
        original(self, venv)

    monkeypatch.setattr(TaskCurriculum, "apply", spy)
    _train(again, resume=True)
    assert handed[0] == pytest.approx(saved)  # the checkpoint's scores, before any new rollout
    assert len([r for r in read_jsonl(again / SCORES) if r["phase"] == 0]) == 6
