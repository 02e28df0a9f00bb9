"""A smoothness penalty on the controller's reactions while it trains (``ppo.smooth``).

On the held-out families the closed loop loses to its own time-averaged schedule (docs/controller.md:
the ``averaged`` row): in two of five seeds it reacts to ``style-clash``'s readings by leaving the
schedule it learned. Seed 3's departure is taken in the second phase (docs/decisions_s3_styleclash.md),
where the guard, which falls back only on readings farther from the training rollouts' than those lie
from each other, never fires (docs/guard_firing.md). A guard at acting time cannot see it; a policy
whose mean action moves little across a reading's neighbourhood would not take it.

Measured (docs/lever_smooth.md, docs/controller.md "Levers tried"): at weight 1 the policy turns
nearly open loop and the schedule it learns is worse on every suite; seed 4 still collapses on
``style-clash``. Kept as an option, off by default.

This is CAPS' spatial smoothness term (Mysore et al., "Regularizing Action Policies for Smooth
Control with Reinforcement Learning", arXiv 2012.06644), measured in the policy's own unit: at every
PPO minibatch, each observation is perturbed by ``noise`` x that entry's spread over the minibatch
(the phase index and budget left stay exact: they are the clock, as in policies/obs_noise.py), and
the penalty is ``weight`` x the mean KL divergence between the policy's Gaussians at the reading and
at the perturbed one, ``sum((mu(s) - mu(s'))**2 / (2 sigma**2))``. In KL units, weight 1 prices a
reaction like PPO prices a step away from its old policy, whatever the action's scale. The policy
still reacts where reacting pays more than the penalty; the value net is untouched.

The penalty's gradient is added to PPO's own (after PPO clips its gradient norm) by a step pre-hook
on the policy's optimizer, so SB3's ``PPO.train`` runs unchanged and the saved zip is an ordinary
``ActorCriticPolicy``'s: nothing of this is needed to load or act. Its mean per update is logged as
``train/smooth_kl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from metactl.envs.observe import block_of
from metactl.policies.obs_noise import CLOCK


class SmoothReactions:
    """Attach the smoothness penalty to an SB3 actor-critic policy (plain or mirrored Gaussian)."""

    def __init__(self, policy: Any, weight: float, noise: float, labels: list[str],
                 record: Callable[[str, float], None] | None = None) -> None:
        if len(labels) != policy.observation_space.shape[0]:
            raise ValueError(f"{len(labels)} observation labels for a space of shape {policy.observation_space.shape}")
        self.policy, self.weight, self.noise, self.record = policy, weight, noise, record
        self.perturbed = th.as_tensor(np.array([block_of(label) not in CLOCK for label in labels]), dtype=th.float32)
        self._obs: th.Tensor | None = None
        evaluate = policy.evaluate_actions

        def evaluate_and_keep(obs: th.Tensor, actions: th.Tensor):
            self._obs = obs  # the minibatch the next optimizer step is computed on
            return evaluate(obs, actions)

        policy.evaluate_actions = evaluate_and_keep
        self._hook = policy.optimizer.register_step_pre_hook(self._add_gradient)

    def penalty(self, obs: th.Tensor) -> th.Tensor:
        """The mean KL between the policy at ``obs`` and at ``obs`` perturbed by ``noise`` x its spread."""
        spread = obs.std(dim=0, unbiased=False) if obs.shape[0] > 1 else th.zeros_like(obs[0])
        shifted = obs + th.randn_like(obs) * self.noise * spread * self.perturbed.to(obs.device)
        low = th.as_tensor(self.policy.observation_space.low, device=obs.device)
        high = th.as_tensor(self.policy.observation_space.high, device=obs.device)
        shifted = th.clamp(shifted, low, high)  # a reading the env could give
        here = self.policy.get_distribution(obs).distribution
        there = self.policy.get_distribution(shifted).distribution
        # sigma is a constant here: the penalty must not be paid by widening exploration.
        return (((here.mean - there.mean) ** 2) / (2 * here.variance.detach())).sum(dim=-1).mean()

    def _add_gradient(self, optimizer: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
        obs, self._obs = self._obs, None
        if obs is None or self.weight == 0:
            return
        with th.enable_grad():
            kl = self.penalty(obs)
            (self.weight * kl).backward()  # accumulates onto PPO's gradient, which step() then applies
        if self.record is not None:
            self.record("train/smooth_kl", float(kl.detach()))

    def remove(self) -> None:
        self._hook.remove()
        self.policy.__dict__.pop("evaluate_actions", None)
