"""One env inside a Ray actor (:class:`metactl.envs.ray_vec_env.RayVecEnv` holds one per env)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


class EnvActor:
    """Holds one env inside a Ray actor and steps it as SB3's ``SubprocVecEnv`` worker does."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        self.env = env_fn()
        if not isinstance(self.env, gym.Env):
            raise TypeError(f"env factory {env_fn!r} returned {type(self.env).__name__}, not a gymnasium.Env")
        # Until the first reset this actor holds no episode: Ray may have restarted it between
        # two calls (a death while the driver was updating the policy), and a step must say so.
        self.fresh = True

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None, options: dict | None) -> tuple[Any, dict]:
        self.fresh = False
        return self.env.reset(seed=seed, **({"options": options} if options else {}))

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, dict, dict] | None:
        """One SB3-style step, or ``None`` when this actor was (re)started since the last reset."""
        if self.fresh:
            return None
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict = {}
        if done:
            info["terminal_observation"] = obs
            obs, reset_info = self.env.reset()
        return obs, reward, done, info, reset_info

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def render(self) -> Any:
        return self.env.render()

    def where(self) -> dict[str, Any]:
        """The node and process this env runs in (which machine to look at when it misbehaves)."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def close(self) -> None:
        self.env.close()
