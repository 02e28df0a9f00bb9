"""RayVecEnv on a local multi-node Ray cluster: a lost node moves its env actors and PPO goes on."""

from __future__ import annotations

from functools import partial

import pytest

ray = pytest.importorskip("ray")

from metactl import envs
from metactl.config import load_config
from metactl.envs.config import EnvConfig, RayConfig
from metactl.envs.vector import make_env

pytestmark = pytest.mark.ray

# Node death is noticed in about a second instead of the default tens of seconds.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 2, "timeout_ms_task_wait_for_death_info": 100,
}


@pytest.fixture()
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # The head holds no CPUs, so every env actor must live on a worker node.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": FAST_FAILURE_DETECTION})
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_losing_a_node_moves_its_actors_and_ppo_goes_on(cluster):
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from metactl.envs.ray_vec_env import RayVecEnv
    from metactl.policies.sb3 import BudgetEndIsFinal

    node_a = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    run = load_config(None, ["training.total_steps=4", "training.layer_groups=2"])
    fns = [partial(make_env, envs.PHASE_ENV_ID, run, EnvConfig(phases=2, train_task_seeds=[0, 2]), i) for i in range(2)]
    venv = RayVecEnv(fns, RayConfig(address=cluster.address, max_restarts=1))
    try:
        assert {w["node_id"] for w in venv.where()} == {node_a.node_id}
        node_b = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()

        seen: list[dict] = []

        class LoseNodeA(BaseCallback):
            def _on_step(self) -> bool:
                seen.extend(self.locals["infos"])
                if self.num_timesteps == 2:  # after the first phase of both episodes
                    cluster.remove_node(node_a)
                return True

        model = PPO("MlpPolicy", BudgetEndIsFinal(venv), n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
        model.learn(total_timesteps=8, callback=LoseNodeA())
        assert model.num_timesteps == 8
        restarted = [i for i in seen if i.get("worker_restarted")]
        assert len(restarted) == 2 and all(i["TimeLimit.truncated"] for i in restarted)
        assert venv.restarts == [1, 1]
        assert {w["node_id"] for w in venv.where()} == {node_b.node_id}
        # The moved envs finish whole episodes again after the move.
        assert sum(1 for i in seen if i.get("episode_end") and "worker_restarted" not in i) >= 2
    finally:
        venv.close()


def test_joining_a_cluster_that_is_not_there_says_how_to_start_one(monkeypatch):
    from pathlib import Path

    from metactl.envs.ray_vec_env import init_ray
    from metactl.errors import ConfigError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized() or Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray instance is already up here, and 'auto' would join it")
    with pytest.raises(ConfigError, match="ray start --head"):
        init_ray(RayConfig(address="auto"))
    assert not ray.is_initialized()
