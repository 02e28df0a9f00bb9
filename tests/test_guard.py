"""The guarded closed loop: the policy acts where its readings look like training ones, its mean action elsewhere."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from metactl.errors import ConfigError
from metactl.policies.guard import GuardedActor, ObservationGuard

LABELS = ["obs/a", "obs/b", "phase=0", "phase=1"]
# Three training rollouts, two phases: entry a spreads 0.0-0.2, entry b 1.0-1.2.
OBS = [
    [[0.0, 1.0, 1, 0], [0.1, 1.1, 0, 1]],
    [[0.1, 1.1, 1, 0], [0.2, 1.2, 0, 1]],
    [[0.2, 1.2, 1, 0], [0.3, 1.3, 0, 1]],
]
ACTIONS = [[[0.0, 1.0], [1.0, 0.0]], [[0.3, 1.0], [0.5, 0.0]], [[0.6, 1.0], [0.0, 0.0]]]


class Constant:
    def __init__(self, action):
        self.action = np.asarray(action, dtype=np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        batch = np.asarray(obs).shape[:-1]
        return np.broadcast_to(self.action, batch + self.action.shape).copy(), state


def test_threshold_is_the_training_rollouts_own_leave_one_out_distance():
    guard = ObservationGuard(OBS, ACTIONS, LABELS)
    np.testing.assert_allclose(guard.fallback, [[0.3, 1.0], [0.5, 0.0]])
    # The clock is not compared. Each rollout's nearest neighbour at phase 0 is 0.1 away on both
    # entries, so the threshold is 0.1 in the entries' common scale.
    assert guard.distance(0, np.array([0.1, 1.1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert guard.scale[0] == pytest.approx(guard.scale[1])
    assert guard.thresholds[0] == pytest.approx(0.1 / guard.scale[0])
    assert not any(guard.unfamiliar(p, np.asarray(o[p], dtype=float)) for o in OBS for p in range(2))
    assert guard.unfamiliar(0, np.array([0.9, 1.0, 1, 0]))
    # A larger margin admits what the plain threshold refuses.
    assert not ObservationGuard(OBS, ACTIONS, LABELS, margin=100.0).unfamiliar(0, np.array([0.9, 1.0, 1, 0]))


def test_the_actor_acts_closed_loop_where_familiar_and_on_the_fallback_elsewhere():
    guard = ObservationGuard(OBS, ACTIONS, LABELS)
    actor = GuardedActor(Constant([9.0, 9.0]), guard, LABELS)
    familiar = np.array([0.15, 1.15, 0, 1], dtype=np.float32)
    strange = np.array([3.0, 1.15, 0, 1], dtype=np.float32)
    np.testing.assert_allclose(actor.predict(familiar)[0], [9.0, 9.0])
    np.testing.assert_allclose(actor.predict(strange)[0], [0.5, 0.0])
    np.testing.assert_allclose(actor.predict(np.stack([familiar, strange]))[0], [[9.0, 9.0], [0.5, 0.0]])
    back = pickle.loads(pickle.dumps(actor))  # sent to evaluation workers
    np.testing.assert_allclose(back.predict(strange)[0], [0.5, 0.0])


def test_guard_round_trips_and_a_margin_can_be_given_on_load(tmp_path):
    guard = ObservationGuard(OBS, ACTIONS, LABELS, margin=2.0)
    guard.save(tmp_path / "guard.json")
    back = ObservationGuard.load(tmp_path / "guard.json")
    assert back.margin == 2.0 and back.thresholds == pytest.approx(guard.thresholds)
    np.testing.assert_allclose(back.fallback, guard.fallback)
    assert ObservationGuard.load(tmp_path / "guard.json", margin=1.0).thresholds[1] == pytest.approx(
        guard.thresholds[1] / 2)


@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ('{"version": 9}', "version 1"),
    ('{"version": 1, "labels": ["a"], "margin": 1, "actions": [[[0]]]}', "lacks ['observations']"),
    ('{"version": 1, "labels": ["obs/a"], "margin": 1, "observations": [[[0]]], "actions": [[[0]]]}',
     "at least 2 rollouts"),
    ('{"version": 1, "labels": ["obs/a"], "margin": 0, "observations": [[[0]], [[1]]], "actions": [[[0]], [[1]]]}',
     "margin must be > 0"),
    ('{"version": 1, "labels": ["obs/a"], "margin": 1, "observations": [[[0]], [[1]]], "actions": [[[0]]]}',
     "same rollouts and phases"),
])
def test_a_bad_guard_file_is_refused_by_name(tmp_path, text, needle):
    (tmp_path / "guard.json").write_text(text)
    with pytest.raises(ConfigError, match="guard") as err:
        ObservationGuard.load(tmp_path / "guard.json")
    assert needle in str(err.value)


def test_a_guard_of_another_layout_is_refused():
    guard = ObservationGuard(OBS, ACTIONS, LABELS)
    with pytest.raises(ConfigError, match="another layout"):
        GuardedActor(Constant([0.0, 0.0]), guard, ["obs/x", "obs/b", "phase=0", "phase=1"])


def test_hold_keeps_the_fallback_for_the_rest_of_the_episode_and_clears_at_phase_zero():
    guard = ObservationGuard(OBS, ACTIONS, LABELS)
    strange0 = np.array([3.0, 1.0, 1, 0], dtype=np.float32)
    familiar0 = np.array([0.1, 1.1, 1, 0], dtype=np.float32)
    familiar1 = np.array([0.15, 1.15, 0, 1], dtype=np.float32)
    held = GuardedActor(Constant([9.0, 9.0]), guard, LABELS, hold=True)
    plain = GuardedActor(Constant([9.0, 9.0]), guard, LABELS)
    for actor, second in ((held, [0.5, 0.0]), (plain, [9.0, 9.0])):
        np.testing.assert_allclose(actor.predict(strange0)[0], [0.3, 1.0])
        np.testing.assert_allclose(actor.predict(familiar1)[0], second)
    # A new episode starts at phase 0 and is judged afresh.
    np.testing.assert_allclose(held.predict(familiar0)[0], [9.0, 9.0])
    np.testing.assert_allclose(held.predict(familiar1)[0], [9.0, 9.0])
    # Batch rows keep their own episodes.
    both = held.predict(np.stack([strange0, familiar0]))[0]
    np.testing.assert_allclose(both, [[0.3, 1.0], [9.0, 9.0]])
    np.testing.assert_allclose(held.predict(np.stack([familiar1, familiar1]))[0], [[0.5, 0.0], [9.0, 9.0]])
    assert pickle.loads(pickle.dumps(held)).hold
