"""Does a trained controller fail on an unseen family because its readings leave the training range?

    python scripts/obs_range.py --run runs/wide/tc-s4 --suite style-clash --task-seeds 1000 1001 1002 1003 1004 1005 \\
        --out docs/obs_range.md

Runs the run's greedy policy, closed loop through the phase env (the same env and runner as
training), on ``--train-tasks`` task seeds of its own training suite, and records every
observation: that is the range the policy saw readings in. Then it runs the policy on the unseen
suite's task seeds (each with ``--episode-seeds``), twice per pair: once as is, once with every
observation entry clipped to the training range before the policy reads it. The report counts the
entries that left the range and by how much, shows how far the policy's actions move from the
prior (its residuals), and pairs the two runs' returns: if clipping changes nothing, the gap on the
unseen family is not extrapolation from out-of-range readings. The training tasks are ones the run
trained on (seeds from ``env.train_task_seeds``); no score of a reported table is read.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from metactl.commands.inspect.rollout import load_actor
from metactl.commands.train_controller.search_start import load_run_config
from metactl.envs import PHASE_ENV_ID, make
from metactl.rundir import CONTROLLER, atomic_write_text
from metactl.tables import render_table


def episode(env, actor, options: dict, clip: tuple[np.ndarray, np.ndarray] | None = None):
    """One greedy episode; its raw observations, actions and return."""
    obs, _ = env.reset(options=options)
    seen, acts, done, info = [], [], False, {}
    while not done:
        seen.append(obs.copy())
        action, _ = actor.predict(obs if clip is None else np.clip(obs, *clip), deterministic=True)
        acts.append(np.clip(action, -1.0, 1.0))
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return np.array(seen), np.array(acts), float(info["episode_return"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a train-controller run dir of policy ppo")
    ap.add_argument("--suite", default="style-clash", help="the unseen suite to run the policy on")
    ap.add_argument("--task-seeds", nargs="+", type=int, default=[1000, 1001, 1002, 1003, 1004, 1005])
    ap.add_argument("--episode-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--train-tasks", type=int, default=16, help="training task seeds read for the range")
    ap.add_argument("--out", type=Path, default=Path("docs/obs_range.md"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    cfg = load_run_config(args.run)
    env = make(PHASE_ENV_ID, run=cfg.run, env=cfg.env)
    actor = load_actor(args.run / CONTROLLER, env)
    lo_seed, hi_seed = cfg.env.train_task_seeds
    train_seeds = list(range(lo_seed, min(hi_seed, lo_seed + args.train_tasks)))
    train = [episode(env, actor, {"task_seed": s, "episode_seed": 0}) for s in train_seeds]
    labels = env.observer.labels
    seen = np.concatenate([o for o, _, _ in train])
    lo, hi = seen.min(0), seen.max(0)
    span = np.maximum(hi - lo, 1e-6)

    outside: Counter = Counter()
    farthest: dict[str, float] = {}
    raw, clipped, residuals, n_obs = [], [], [], 0
    for ts in args.task_seeds:
        for e in args.episode_seeds:
            options = {"task_seed": ts, "episode_seed": e, "suite": args.suite}
            obs, acts, ret = episode(env, actor, options)
            raw.append(ret)
            clipped.append(episode(env, actor, options, clip=(lo, hi))[2])
            residuals.append(acts)
            n_obs += len(obs)
            for row in obs:
                for j in np.flatnonzero((row < lo - 1e-6) | (row > hi + 1e-6)):
                    outside[labels[j]] += 1
                    beyond = float(max(lo[j] - row[j], row[j] - hi[j]) / span[j])
                    farthest[labels[j]] = max(farthest.get(labels[j], 0.0), beyond)

    entries = [["observation entry", "readings outside the training range", "farthest beyond it (x the range)"]]
    for label, n in outside.most_common():
        entries.append([label, f"{n}/{n_obs}", f"{farthest[label]:.2f}"])
    res = np.abs(np.concatenate(residuals))
    train_res = np.abs(np.concatenate([a for _, a, _ in train]))
    action_labels = env.controls.labels()
    moves = [["action", "mean abs residual, training tasks", f"mean abs residual, {args.suite}",
              f"largest, {args.suite}"]]
    for j, label in enumerate(action_labels):
        moves.append([label, f"{train_res[:, j].mean():.3f}", f"{res[:, j].mean():.3f}", f"{res[:, j].max():.3f}"])
    diffs = [c - r for r, c in zip(raw, clipped)]
    text = (
        f"# Readings outside the training range: {args.suite} under `{args.run.name}`\n\n"
        f"<!-- Written by `python scripts/obs_range.py --run {args.run} --suite {args.suite} --task-seeds "
        f"{' '.join(map(str, args.task_seeds))} --episode-seeds {' '.join(map(str, args.episode_seeds))} "
        f"--train-tasks {args.train_tasks} --out {args.out}`; do not edit by hand. -->\n\n"
        f"The training range: every observation of the greedy policy on training task seeds {train_seeds} "
        f"(episode seed 0), {len(seen)} readings of {len(labels)} entries. Then {len(raw)} (task, episode seed) "
        f"pairs of `{args.suite}` (task seeds {args.task_seeds}, episode seeds {args.episode_seeds}), "
        f"{n_obs} readings. Wall time {time.perf_counter() - t0:.0f} s.\n\n"
        "Entries that left the range (the rest stayed inside it):\n\n"
        + render_table(entries, "markdown")
        + "\n\nHow far the greedy actions move from the prior (the residual `a`; the env decodes "
        "`clip(prior + 2a)`, so 0.5 moves a share by half its range):\n\n"
        + render_table(moves, "markdown")
        + f"\n\nReturn (final composite minus the base's) on the {len(raw)} pairs: as is "
        f"{statistics.mean(raw):+.3f} (per pair {min(raw):+.3f} to {max(raw):+.3f}); with every reading clipped "
        f"to the training range {statistics.mean(clipped):+.3f}; paired difference {statistics.mean(diffs):+.3f} "
        f"(largest change on one pair {max(diffs, key=abs):+.3f}).\n"
    )
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
