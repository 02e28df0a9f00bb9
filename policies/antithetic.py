"""Mirrored exploration noise for the controller's PPO (``ppo.antithetic``).

With ``ppo.group_size: 2`` each pair of envs runs one task and episode seed (same data order,
same adapter init: :mod:`metactl.policies.group_relative`). If both episodes also draw their own
exploration noise, the pair's return difference mixes the two draws. Here the second episode of a
pair takes the first's noise negated, ``mean + eps`` and ``mean - eps`` (mirrored or antithetic
sampling, as in evolution strategies: Salimans et al. 2017, arXiv 1703.03864), so the
leave-one-out advantage ``R(+eps) - R(-eps)`` is a central difference of the return along
``eps``: the part of the return that is even in ``eps`` (the task, the seed, the curvature)
cancels, and what is left is the noise direction's effect. Each action is still drawn from the
policy's own Gaussian (``-eps`` is distributed as ``eps``), so PPO's ratios and log-probabilities
are unchanged; the gradient estimate ``eps (R(+eps) - R(-eps))`` is twice the plain one in
expectation, a scale PPO's advantage normalisation removes.

Pairs are consecutive envs (0-1, 2-3, ...), the grouping ``group_size: 2`` seeds; all envs step
together, so the two episodes of a pair are at the same phase at every step. Greedy actions
(evaluation, transfer) are the mean, as for any SB3 policy: the mirroring only shapes exploration.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy


class MirroredNoisePolicy(ActorCriticPolicy):
    """An ``ActorCriticPolicy`` whose sampled actions come in mirrored pairs across consecutive envs."""

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        if deterministic or obs.shape[0] % 2 or self.use_sde:
            return super().forward(obs, deterministic)
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            latent_pi = self.mlp_extractor.forward_actor(features[0])
            latent_vf = self.mlp_extractor.forward_critic(features[1])
        values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        normal = distribution.distribution
        # The std is one parameter vector for every state, so the pair's stds are equal and the
        # mirrored draw is a draw of the second env's own Gaussian.
        eps = th.randn_like(normal.mean[0::2]) * normal.stddev[0::2]
        actions = normal.mean + th.stack([eps, -eps], dim=1).reshape(normal.mean.shape)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob
