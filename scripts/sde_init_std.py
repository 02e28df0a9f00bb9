"""The ``ppo.log_std_init`` under gSDE that starts as wide as the plain Gaussian's.

    python scripts/sde_init_std.py --out docs/sde_init_std.md

Under gSDE (``ppo.use_sde``) an action's noise is the policy's last hidden layer times a matrix
whose entries have std exp(log_std_init), so the action's std is |hidden| * exp(log_std_init). This
builds the default config's phase env and PPO policy (net_arch, seeds 0-2), reads |hidden| on the
observations of a few prior-following episodes (the zero action), and writes the log_std_init that
matches the default Gaussian's exp(ppo.log_std_init). The whole file is written by this script.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from metactl.envs import PHASE_ENV_ID, make
from metactl.policies.config import load_controller_config
from metactl.rundir import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    cfg = load_controller_config(None)
    env = make(PHASE_ENV_ID, run=cfg.run, env=cfg.env)
    obs = []
    for s in range(args.episodes):
        o, _ = env.reset(seed=s)
        obs.append(o)
        for _ in range(cfg.env.phases - 1):
            o, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
            obs.append(o)
    obs_t = torch.as_tensor(np.array(obs))
    arch = list(cfg.ppo.net_arch)
    norms = []
    for seed in (0, 1, 2):
        model = PPO("MlpPolicy", env, use_sde=True, seed=seed, device="cpu",
                    policy_kwargs={"net_arch": {"pi": arch, "vf": arch}})
        with torch.no_grad():
            features = model.policy.extract_features(obs_t, model.policy.pi_features_extractor)
            norms.append(float(model.policy.mlp_extractor.forward_actor(features).norm(dim=1).mean()))
    mean = statistics.mean(norms)
    match = cfg.ppo.log_std_init - math.log(mean)
    atomic_write_text(args.out, "\n".join([
        "# gSDE's initial log std, matched to the plain Gaussian's\n",
        (f"<!-- Written by `python scripts/sde_init_std.py --episodes {args.episodes} --out {args.out}`; "
         "do not edit by hand. -->\n"),
        f"Default config, net_arch {arch}, {len(obs)} observations of {args.episodes} prior-following episodes.\n",
        "| policy init seed | mean norm of the last hidden layer |", "|---|---|",
        *(f"| {s} | {n:.3f} |" for s, n in enumerate(norms)),
        "",
        (f"Mean {mean:.3f}: `ppo.log_std_init` {match:.2f} under gSDE gives an action std of about "
         f"exp({cfg.ppo.log_std_init}) = {math.exp(cfg.ppo.log_std_init):.3f}, the default Gaussian's."),
    ]) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
