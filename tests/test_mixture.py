"""Mixtures of task families: one task seed names one family's task, and everything that takes a
suite name (engines, envs, evaluation jobs) takes a mixture the same way."""

from __future__ import annotations

import numpy as np
import pytest

from metactl.errors import ConfigError
from metactl.tasks import HELDOUT_FAMILIES, TRAIN_FAMILIES, check_suite_name, load_suite, mixture


def test_a_mixture_seed_is_one_members_task():
    names = list(TRAIN_FAMILIES)
    for seed in range(2 * len(names)):
        member, inner = mixture.member_task(names, seed)
        got = load_suite("train-families", seed)
        want = load_suite(member, inner)
        assert got.name == member and got.task_seed == seed
        assert got.data == want.data and got.evals == want.evals
    assert load_suite("+".join(names), 4).data == load_suite("train-families", 4).data


def test_training_and_heldout_seeds_of_a_mixture_never_meet():
    """Training seeds [0, 16) and evaluation seeds 1000+ map to disjoint member tasks."""
    names = list(TRAIN_FAMILIES)
    train = {mixture.member_task(names, s) for s in range(16)}
    held = {mixture.member_task(names, s) for s in range(1000, 1010)}
    assert not train & held
    assert not set(TRAIN_FAMILIES) & set(HELDOUT_FAMILIES)


@pytest.mark.parametrize("name, needle", [
    ("style-vs-truth+sycophncy", "did you mean 'sycophancy'"),
    ("heldout-familes", "did you mean 'heldout-families'"),
])
def test_bad_mixture_names_fail_naming_the_member(name, needle):
    with pytest.raises(ConfigError) as err:
        check_suite_name(name)
    assert needle in str(err.value).lower()


def test_env_draws_every_training_family_and_reads_one_layout():
    """The phase env on a mixture: tasks of several families, one observation layout (no family's
    own knobs in it), and an evaluation suite pinned through reset's options."""
    from metactl import envs
    from metactl.config import load_config
    from metactl.envs.config import EnvConfig

    run = load_config(None, ["suite=train-families", "training.total_steps=8", "training.score_probes=8"])
    env = envs.PhaseControlEnv(run, EnvConfig(phases=2, train_task_seeds=[0, 6], quick_probes=4))
    families, labels = set(), None
    for seed in range(4):
        obs, info = env.reset(seed=seed)
        families.add(env.engine.task.suite.name)
        labels = labels or info["observation_labels"]
        assert info["observation_labels"] == labels and env.observation_space.contains(obs)
    assert len(families) >= 2
    assert not [x for x in labels if x.startswith("feature/")]
    obs, info = env.reset(options={"task_seed": 1000, "episode_seed": 0, "suite": "heldout-families"})
    assert env.engine.task.suite.name in HELDOUT_FAMILIES and info["observation_labels"] == labels
    done = False
    while not done:
        obs, reward, term, trunc, info = env.step(np.zeros(env.action_space.shape, np.float32))
        done = term or trunc
    assert np.isfinite(reward) and "episode_return" in info


def test_eval_suites_are_checked_before_any_weights_load():
    from metactl.policies.config import load_controller_config

    with pytest.raises(ConfigError) as err:
        load_controller_config(None, ["eval_suites=[heldout-familes]"])
    assert "eval_suites[0]" in str(err.value) and "did you mean 'heldout-families'" in str(err.value).lower()
    cfg = load_controller_config(None, ["run.suite=train-families", "eval_suites=[train-families,heldout-families]"])
    assert cfg.eval_suites == ["heldout-families"]  # run.suite is always evaluated, once


def test_tables_of_mixed_families_share_their_per_split_parts():
    """Families name their behaviours differently; a table over several shows what all rows have."""
    from metactl.evaluation import Evaluation

    def row(label, family, behaviours, suite="heldout-families"):
        scores = {f"{s}/{b}": 0.5 for s in ("target", "heldout") for b in behaviours}
        scores |= {"target": 0.5, "heldout": 0.5, "kl": 0.1, "stability": 0.4, "cka": 0.9, "composite": 1.4}
        return {"label": label, "suite": suite, "family": family, "task_seed": 1000, "scores": scores,
                "base": {"composite": 1.0}}

    ev = Evaluation([row("ppo", "a", ["style", "truth"]), row("ppo", "b", ["format", "correct"])])
    assert ev.parts == ["target", "heldout", "kl", "stability", "cka", "composite"]
    assert Evaluation([row("ppo", "a", ["style", "truth"])]).parts[:2] == ["target/style", "target/truth"]
    assert ev.of_suite("heldout-families").rows == ev.rows and ev.of_suite("other").rows == []
