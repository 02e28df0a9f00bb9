"""RayVecEnv: same episodes as DummyVecEnv, PPO through SB3's wrappers, a worker that dies mid-episode.

Needs the ``ray`` extra (``pip install -e '.[ray]'``); without it these tests are skipped.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from metactl import envs
from metactl.config import load_config
from metactl.envs.config import EnvConfig, RayConfig
from metactl.envs.vector import make_env

pytestmark = pytest.mark.ray

RUN = ["training.total_steps=4", "training.layer_groups=2"]
ENV = EnvConfig(phases=2, train_task_seeds=[0, 2])


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (each start costs seconds); always shut down."""
    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _fns(env_id: str, n: int, **kw) -> list:
    run = load_config(None, RUN)
    return [partial(make_env, env_id, run, ENV, i, **kw) for i in range(n)]


def _rollout(venv, actions: list[np.ndarray]) -> list:
    venv.seed(11)
    out = [venv.reset()]
    for a in actions:
        obs, rew, done, infos = venv.step(a)
        out.append((obs, rew, done, [(i.get("task_seed"), i.get("episode_seed"), i.get("phase")) for i in infos],
                    [i.get("terminal_observation") for i in infos]))
    return out


# RayVecEnv does not know which env it hosts; the bandit env (one step per episode) is the slow
# extra case, kept for `-m slow` runs so the default suite stays near 15 minutes.
@pytest.mark.parametrize("env_id", [envs.PHASE_ENV_ID, pytest.param(envs.BANDIT_ENV_ID, marks=pytest.mark.slow)])
def test_ray_vec_env_gives_the_same_episodes_as_dummy_vec_env(local_ray, env_id):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metactl.envs.ray_vec_env import RayVecEnv

    dummy = DummyVecEnv(_fns(env_id, 2))
    remote = RayVecEnv(_fns(env_id, 2))
    try:
        rng = np.random.default_rng(0)
        steps = 3 if env_id == envs.PHASE_ENV_ID else 2  # either way across an episode end
        actions = [rng.uniform(-0.5, 0.5, (2, *dummy.action_space.shape)).astype(np.float32) for _ in range(steps)]
        a, b = _rollout(dummy, actions), _rollout(remote, actions)
        np.testing.assert_array_equal(a[0], b[0])
        for (o1, r1, d1, i1, t1), (o2, r2, d2, i2, t2) in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(o1, o2)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(d1, d2)
            assert i1 == i2
            for x, y in zip(t1, t2):
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_array_equal(x, y)
        assert any(d.any() for _, _, d, _, _ in a[1:]), "the rollout should cross an episode end (auto-reset)"
        # The rest of the VecEnv API reaches the actors.
        assert remote.get_attr("worker_index") == [0, 1]
        assert remote.env_method("set_worker_index", 5, indices=[1]) == [None]
        assert remote.get_attr("worker_index", indices=[1]) == [5]
        from stable_baselines3.common.monitor import Monitor

        assert remote.env_is_wrapped(Monitor) == [True, True]
    finally:
        dummy.close()
        remote.close()


def test_ppo_learns_through_vecnormalize_and_vecmonitor_on_ray(local_ray):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from metactl.envs.ray_vec_env import RayVecEnv

    venv = VecNormalize(VecMonitor(RayVecEnv(_fns(envs.PHASE_ENV_ID, 2, monitor=False))), gamma=1.0)
    try:
        model = PPO("MlpPolicy", venv, n_steps=2, batch_size=4, n_epochs=2, seed=0, device="cpu")
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(total_timesteps=4)  # one rollout: a whole two-phase episode per env
        after = list(model.policy.parameters())
        assert any(not torch.equal(x, y) for x, y in zip(before, after)), "PPO updates should move the policy"
        assert venv.obs_rms.count > 4, "VecNormalize should have seen the rollouts"
        assert len(model.ep_info_buffer) >= 2, "VecMonitor should report finished episodes"
        assert all(np.isfinite(info["r"]) for info in model.ep_info_buffer)
    finally:
        venv.close()


def test_a_worker_that_kills_itself_is_a_truncation_and_training_goes_on(local_ray, tmp_path, monkeypatch):
    """SIGKILL inside a worker mid-episode: the trainer logs a truncated episode and finishes its budget."""
    from metactl.commands.train_controller.run import train_controller
    from metactl.envs.faults import make_env_that_dies_once
    from metactl.policies.config import load_controller_config

    marker = tmp_path / "died"
    # Worker processes import the factory by name; this one is a package function, so they can.
    monkeypatch.setattr("metactl.envs.vector.make_env", partial(make_env_that_dies_once, str(marker), 2))
    cfg = load_controller_config(None, [
        "vec_env=ray", "n_envs=2", "ray.max_restarts=1", *[f"run.{o}" for o in RUN], "env.phases=2",
        "env.train_task_seeds=[0,2]", "eval_task_seeds=[1000]", "compare=[default]", "ppo.episodes_per_update=4",
        "total_episodes=4", "run.training.score_probes=16", "eval_suites=[]",
    ])
    res = train_controller(cfg, tmp_path / "run", progress=False)
    assert marker.is_file(), "one worker should have killed itself"
    rows = [json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    lost = [r for r in rows if r.get("worker_restarted")]
    assert len(lost) == 1 and lost[0]["return"] is None
    # Killed at its second step, i.e. after one phase of a two-phase episode: that phase is logged.
    assert [r["phase"] for r in rows if r["episode"] == lost[0]["episode"]] == [0, 1]
    assert res.episodes == 4
    finished = {r["episode"] for r in rows if r.get("return") is not None}
    assert len(finished) == 3
    assert (tmp_path / "run" / "controller.zip").is_file()
    assert {r["label"] for r in res.evaluation.rows} == {"ppo", "default"}


def test_a_worker_killed_between_steps_is_reported_at_its_next_step(local_ray):
    """Dying while the driver updates the policy or checkpoints: attribute calls go through the
    restart, and the next step reports the lost episode instead of stepping a fresh env."""
    import os
    import signal
    import time

    from metactl.envs.ray_vec_env import RayVecEnv

    venv = RayVecEnv(_fns(envs.PHASE_ENV_ID, 2), RayConfig(max_restarts=1))
    try:
        venv.seed(3)
        venv.reset()
        zero = np.zeros((2, *venv.action_space.shape), dtype=np.float32)
        venv.step(zero)
        os.kill(venv.where()[1]["pid"], signal.SIGKILL)
        time.sleep(1.0)
        assert len(venv.get_attr("np_random")) == 2  # what a checkpoint reads, across the restart
        _, _, dones, infos = venv.step(zero)
        assert list(dones) == [True, True]  # env 0 reached its budget end; env 1 lost its episode
        assert "worker_restarted" not in infos[0] and infos[1]["worker_restarted"] and infos[1]["TimeLimit.truncated"]
        assert venv.restarts == [0, 1]
        _, _, dones, infos = venv.step(zero)  # both go on with fresh episodes
        assert list(dones) == [False, False] and not any("worker_restarted" in i for i in infos)
    finally:
        venv.close()


def test_env_actors_the_cluster_cannot_hold_fail_at_once_with_the_fix(local_ray):
    from metactl.envs.ray_vec_env import RayVecEnv
    from metactl.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=r"3 env actors x 2 CPU = 6 CPU, but the Ray cluster has 4 CPU in all; "
        r"set ray.cpus_per_env=1.333",
    ):
        RayVecEnv(_fns(envs.PHASE_ENV_ID, 3), RayConfig(cpus_per_env=2))
    with pytest.raises(ConfigError, match="has 0 GPU in all; set ray.gpus_per_env=0"):
        RayVecEnv(_fns(envs.PHASE_ENV_ID, 1), RayConfig(gpus_per_env=0.25))


def test_restart_seeds_are_deterministic_and_distinct():
    from metactl.envs.ray_vec_env import restart_seed

    assert restart_seed(11, 0, 1) == restart_seed(11, 0, 1)
    assert len({restart_seed(11, i, k) for i in range(4) for k in range(1, 4)}) == 12


def test_ray_config_is_validated_before_anything_starts():
    from metactl.errors import ConfigError
    from metactl.policies.config import load_controller_config

    with pytest.raises(ConfigError, match=r"ray.gpus_per_env: got -0.5; allowed range is \[0, 64\]"):
        RayConfig(gpus_per_env=-0.5)
    with pytest.raises(ConfigError, match="both 0"):
        RayConfig(cpus_per_env=0)
    with pytest.raises(ConfigError, match="vec_env: unknown value 'rya'.*Did you mean 'ray'"):
        load_controller_config(None, ["vec_env=rya"])
    with pytest.raises(ConfigError, match="ray.max_restarts: expected an integer"):
        load_controller_config(None, ["ray.max_restarts=1.5"])


def test_train_controller_cli_checks_vec_env_before_weights_load(no_weights):
    from typer.testing import CliRunner

    from metactl.commands.cli import app

    res = CliRunner().invoke(app, ["train-controller", "--vec-env", "rya", "--quiet"])
    assert res.exit_code == 2 and "Did you mean 'ray'" in res.output
