"""Checkpoints of a train-controller run: ``checkpoints/ckpt-<episodes>/`` after every update.

Each holds the policy's state, the progress and every env's RNG, all in forms that load without
running code (JSON, SB3 zips loaded with every pickled entry replaced, ``weights_only`` tensors).
Checkpoints are directories written atomically (built aside, then renamed), so a kill leaves
either the previous complete checkpoint or the new one; ``state.json`` is written last, and one
without it is skipped.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from metactl.errors import ConfigError
from metactl.policies import Policy
from metactl.rundir import CHECKPOINTS, atomic_write_dir, atomic_write_text, rng_from_state

log = logging.getLogger("metactl.train_controller")
KEEP_CHECKPOINTS = 2
ENV_RNGS = "env_rngs.json"  # every env's numpy bit-generator state (plain JSON: nothing to unpickle)


@dataclass
class Checkpoint:
    path: Path
    episodes: int
    updates: int


def save_checkpoint(out: Path, policy: Policy, venv, episodes: int, updates: int) -> None:
    rngs = venv.get_attr("np_random")
    # RayVecEnv: restarts so far, so that a resumed run's restarted workers get seeds not used before.
    restarts = venv.lifetime_restarts() if hasattr(venv, "lifetime_restarts") else None

    def fill(tmp: Path) -> None:
        policy.save(tmp)
        atomic_write_text(tmp / ENV_RNGS, json.dumps([rng.bit_generator.state for rng in rngs]))
        if restarts is not None:
            atomic_write_text(tmp / "env_restarts.json", json.dumps(list(restarts)))
        # Written last: a checkpoint without state.json is incomplete and is skipped.
        atomic_write_text(tmp / "state.json", json.dumps({"episodes": episodes, "updates": updates}))

    root = out / CHECKPOINTS
    atomic_write_dir(root / f"ckpt-{episodes:06d}", fill)
    for old in sorted(root.glob("ckpt-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoints(out: Path) -> list[Checkpoint]:
    """Complete checkpoints, newest first; incomplete ones are skipped with a warning."""
    found = []
    for d in sorted((out / CHECKPOINTS).glob("ckpt-*"), reverse=True):
        try:
            state = json.loads((d / "state.json").read_text())
            found.append(Checkpoint(d, int(state["episodes"]), int(state["updates"])))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("skipping incomplete checkpoint %s (%s)", d, exc)
    return found


def restore(out: Path, policy: Policy, venv) -> Checkpoint | None:
    """The newest checkpoint that loads, restored into ``policy`` and ``venv``; None when the run has
    none yet (killed before its first). When it has some and none loads, the resume is refused:
    starting afresh would write over the run."""
    errors = []
    for ckpt in find_checkpoints(out):
        try:
            policy.load(ckpt.path, venv)
            rngs = [rng_from_state(s) for s in json.loads((ckpt.path / ENV_RNGS).read_text())]
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint must not stop the resume
            log.warning("skipping unreadable checkpoint %s (%s: %s)", ckpt.path, type(exc).__name__, exc)
            errors.append(f"{ckpt.path.name}: {exc}")
            continue
        for i, rng in enumerate(rngs[: venv.num_envs]):
            # Taken at the next reset, after any seeding the learner's setup asked for.
            venv.env_method("resume_rng", rng, indices=[i])
        if hasattr(venv, "lifetime_restarts") and (ckpt.path / "env_restarts.json").is_file():
            venv.resume_restarts(json.loads((ckpt.path / "env_restarts.json").read_text()))
        return ckpt
    if errors:
        raise ConfigError(f"--resume {out}: no checkpoint of the run could be loaded ({'; '.join(errors)}).")
    return None
