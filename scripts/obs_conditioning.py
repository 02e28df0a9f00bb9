"""How far each phase-env observation entry moves when the base weights move by rounding-level noise.

    python scripts/obs_conditioning.py --out docs/obs_conditioning.md

Runs the phase env (3 envs, the same seeds and actions) once as is and once per ``--eps`` with every
base-model weight multiplied by ``1 + eps * N(0, 1)`` (adapters untouched), and reports, per
observation label, the largest change over envs and steps. fp32 kernels that sum in another order
(a GPU's, or a batched path's) perturb a computation by about 1e-7 relative: an entry that moves far
more than that here is ill-conditioned, and is where two exact-in-intent paths can differ beyond a
test's tolerance. The episode is the exactness test's (tests/test_population.py: 8 steps, 2 layer
groups, 2 phases).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from metactl.rundir import atomic_write_text


def trace(eps: float, n: int = 3, steps: int = 3) -> tuple[list[np.ndarray], list[str]]:
    from metactl.config import load_config
    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.config import EnvConfig
    from metactl.envs.vector import make_venv

    run = load_config(None, ["training.total_steps=8", "training.layer_groups=2", "training.score_probes=8"])
    env = EnvConfig(phases=2, quick_probes=4, interference_rows=4)
    venv = make_venv(PHASE_ENV_ID, run, env, n, "dummy", processes=1)
    try:
        if eps:
            gen = torch.Generator().manual_seed(1)
            for e in venv.envs:
                with torch.no_grad():
                    for name, p in e.unwrapped.engine.model.named_parameters():
                        if "lora" not in name:
                            p.mul_(1 + eps * torch.randn(p.shape, generator=gen))
        venv.seed(3)
        rng = np.random.default_rng(0)
        out = [venv.reset()]
        labels = list(venv.reset_infos[0]["observation_labels"])
        for _ in range(steps):
            actions = rng.uniform(-0.5, 0.5, (n, *venv.action_space.shape)).astype("f4")
            out.append(venv.step(actions)[0])
    finally:
        venv.close()
    return out, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-8, 1e-7, 1e-6])
    ap.add_argument("--top", type=int, default=10, help="labels listed, largest change first")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref, labels = trace(0.0)
    moved = {}
    for eps in args.eps:
        got, _ = trace(eps)
        diff = np.max([np.abs(a - b).max(axis=0) for a, b in zip(ref, got)], axis=0)  # per label
        moved[eps] = {lab: float(d) for lab, d in zip(labels, diff)}
    order = sorted(labels, key=lambda lab: -max(m[lab] for m in moved.values()))
    lines = [
        "# Observation entries under rounding-level noise",
        "",
        (
            f"Made by `python scripts/obs_conditioning.py{' --out ' + str(args.out) if args.out else ''}`: the "
            "phase env of the exactness test (3 envs, 8 steps, 2 phases, the same seeds and actions), every base "
            "weight times 1 + eps N(0, 1); the largest change of each observation entry over envs and steps."
        ),
        "",
        "| label | " + " | ".join(f"change at eps={e:g}" for e in args.eps) + " |",
        "|---|" + "---|" * len(args.eps),
    ]
    for lab in order[: args.top]:
        cells = " | ".join(f"{moved[e][lab]:.2e}" for e in args.eps)
        lines.append(f"| {lab.replace('|', '&#124;')} | {cells} |")
    rest = max((m[lab] for m in moved.values() for lab in order[args.top:]), default=0.0)
    lines += ["", f"Every other entry ({len(order) - args.top} labels) moved at most {rest:.2e} at any eps."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
