"""The enveloped closed loop: the policy's actions clipped, per phase, into their range on training tasks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from metactl.errors import ConfigError
from metactl.policies.envelope import ActionEnvelope, EnvelopedActor, phase_reader

LABELS = ["obs/a", "phase=0", "phase=1", "budget_left"]


class Constant:
    """An actor that always asks for the same action (what an MLP does far outside its data)."""

    def __init__(self, action):
        self.action = np.asarray(action, dtype=np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        batch = np.asarray(obs).shape[:-1]
        return np.broadcast_to(self.action, batch + self.action.shape).copy(), state


def test_envelope_is_the_range_of_the_rollouts_and_round_trips(tmp_path):
    env = ActionEnvelope.from_actions([[[0.0, 1.0], [0.5, -1.0]], [[0.2, 0.0], [0.1, -2.0]]])
    assert env.low == [[0.0, 0.0], [0.1, -2.0]] and env.high == [[0.2, 1.0], [0.5, -1.0]] and env.tasks == 2
    env.save(tmp_path / "envelope.json")
    assert ActionEnvelope.load(tmp_path / "envelope.json") == env
    np.testing.assert_allclose(env.clip(1, np.array([9.0, 9.0])), [0.5, -1.0])


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ('{"version": 7, "low": [[0]], "high": [[1]], "tasks": 1}', "version 1"),
    ('{"version": 1, "low": [[0]], "tasks": 1}', "lacks ['high']"),
    ('{"version": 1, "low": [[2.0]], "high": [[1.0]], "tasks": 1}', "phase 0, entry 0: low 2.0 is above high 1.0"),
    ('{"version": 1, "low": [[0, 0]], "high": [[1]], "tasks": 1}', "of one shape"),
])
def test_a_bad_envelope_file_is_refused_by_name(tmp_path, text, needle):
    (tmp_path / "envelope.json").write_text(text)
    with pytest.raises(ConfigError, match="envelope") as err:
        ActionEnvelope.load(tmp_path / "envelope.json")
    assert needle in str(err.value)


def test_the_actor_reads_its_phase_from_the_clock_and_clips_into_it():
    env = ActionEnvelope([[0.0, 0.0], [-1.0, 0.5]], [[0.1, 0.2], [1.0, 0.6]], tasks=3)
    actor = EnvelopedActor(Constant([5.0, -5.0]), env, LABELS)
    first = np.array([0.3, 1.0, 0.0, 1.0], dtype=np.float32)
    second = np.array([0.3, 0.0, 1.0, 0.5], dtype=np.float32)
    np.testing.assert_allclose(actor.predict(first)[0], [0.1, 0.0])
    np.testing.assert_allclose(actor.predict(second)[0], [1.0, 0.5])
    np.testing.assert_allclose(actor.predict(np.stack([first, second]))[0], [[0.1, 0.0], [1.0, 0.5]])
    inside = EnvelopedActor(Constant([0.05, 0.1]), env, LABELS)
    np.testing.assert_allclose(inside.predict(first)[0], [0.05, 0.1])  # inside the envelope: untouched
    # Pickled for evaluation workers (the clock reader is rebuilt there).
    back = pickle.loads(pickle.dumps(actor))
    np.testing.assert_allclose(back.predict(second)[0], [1.0, 0.5])


def test_without_the_one_hot_the_clock_is_budget_left_and_without_both_it_is_refused():
    read = phase_reader(["obs/a", "budget_left"], phases=4)
    assert [read(np.array([0.0, b])) for b in (1.0, 0.75, 0.5, 0.25)] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="no clock"):
        phase_reader(["obs/a", "norm/sft/0"], phases=4)


@pytest.mark.parametrize("overrides, needle", [
    (["policy=bandit", "compare=[default,enveloped]"], "policy 'bandit' takes none"),
    (["compare=[enveloped]", "env.hide=[phase,budget_left]"], "show one of them"),
])
def test_compare_enveloped_is_refused_before_training_where_it_cannot_act(overrides, needle):
    from metactl.policies.config import load_controller_config

    with pytest.raises(ConfigError, match="enveloped") as err:
        load_controller_config(None, overrides)
    assert needle in str(err.value)


def test_a_clock_of_another_length_is_refused():
    with pytest.raises(ConfigError, match="another env.phases"):
        phase_reader(LABELS, phases=4)
