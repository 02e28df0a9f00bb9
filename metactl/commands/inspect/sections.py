"""The readings ``metactl inspect`` assembles, one function per report section (decisions,
attribution, order, learning, why, implantation); :mod:`.run` orchestrates them."""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from metactl.commands.inspect.ablate import ModelAblation, kept_scores, merged, swapped, tool_steps, without_phase
from metactl.commands.inspect.jobs import JobPool
from metactl.commands.inspect.readout import layer_readout, share_below_output
from metactl.commands.inspect.rollout import Trace, flat_phase
from metactl.commands.inspect.saliency import explain, perturbation_saliency
from metactl.commands.inspect.shapley import leave_one_out, shapley
from metactl.commands.inspect.source import RunDir
from metactl.evaluation import finished_rows
from metactl.rundir import EVAL, SCORES, read_jsonl
from metactl.schedule import Schedule
from metactl.score_parts import HEADLINE_PARTS

RANDOM_SCHEDULES = "random"


def n_layers(scores: dict, prefix: str = "") -> int:
    return sum(1 for k in scores if k.startswith(f"{prefix}cka/"))


# -- decisions -----------------------------------------------------------------------------------------
def decisions(trace: Trace, total_steps: int) -> dict:
    sched = trace.schedule
    steps = tool_steps(sched, total_steps)
    phases = []
    for i, (p, st) in enumerate(zip(sched.phases, steps)):
        phases.append({
            "phase": i, "fraction": p.fraction, "tool_steps": st,
            "tools": {t: {"share": c.share, "train": c.train, "output": c.output} for t, c in p.tools.items()},
            "merge": dataclasses.asdict(p.merge) if p.merge is not None else None,
        })
    space = getattr(trace.env, "controls", None) or getattr(trace.env, "space", None)  # the env's actions, if any
    decided = bool(getattr(space, "merge", ()))
    return {
        "merge_decided": decided,  # the policy's actions include merges (env.merge)
        "schedule": sched.to_dict(),
        "phases": phases,
        "final": kept_scores(trace.final),
        "base": kept_scores(trace.base),
        "phase_scores": [kept_scores(s) for s in trace.phase_scores],
        "norms": trace.norms,
    }


# -- attribution ---------------------------------------------------------------------------------------
def attribute(engine, trace: Trace) -> dict:
    ablation = ModelAblation(engine)
    tools = list(engine.tool_names)
    tool_table = ablation.tool_table()
    group_table = ablation.group_table()
    full = tool_table[frozenset(tools)]
    base = tool_table[frozenset()]
    total = {k: full[k] - base[k] for k in full}
    tool_values = shapley(tools, tool_table)
    group_values = shapley(list(range(engine.layer_map.groups)), group_table)
    gap = max(abs(sum(v[k] for v in tool_values.values()) - total[k]) for k in total)
    return {
        "final": full,
        "base": base,
        "total_change": total,
        "tools": {
            "shapley": tool_values,
            "leave_one_out": leave_one_out(tools, tool_table),
            "coalitions": {"+".join(sorted(s)) or "none": v for s, v in tool_table.items()},
        },
        "groups": {"shapley": {f"g{g}": v for g, v in group_values.items()}},
        "tool_groups": {f"{t} g{g}": v for (t, g), v in ablation.tool_group_loo(full).items()},
        "efficiency_gap": gap,
        "_scorings": ablation.evaluations,
    }


def submit_phase_ablations(pool: JobPool, schedule: Schedule, task_seed: int, seed: int) -> dict[int, str]:
    return {i: pool.submit(without_phase(schedule, i), task_seed, seed) for i in range(len(schedule.phases))}


def phase_loo(pool: JobPool, keys: dict[int, str], final: dict) -> dict:
    full = kept_scores(final)
    return {f"phase {i}": {k: full[k] - pool.result(key)[k] for k in full} for i, key in keys.items()}


# -- order and repetition ------------------------------------------------------------------------------
def submit_order(
    pool: JobPool, schedule: Schedule, tools: list[str], total: int, task_seed: int, seed: int
) -> dict[str, str]:
    variants = [swapped(schedule, i) for i in range(len(schedule.phases) - 1)]
    variants += [m for m in (merged(schedule, t, total) for t in tools) if m is not None]
    return {v.name: pool.submit(v, task_seed, seed) for v in variants}


def order(pool: JobPool, keys: dict[str, str], trace: Trace) -> dict:
    original = kept_scores(trace.final)
    rows = []
    for name, key in keys.items():
        s = pool.result(key)
        rows.append({"variant": name, "scores": s, "delta": {k: s[k] - original[k] for k in original}})
    return {"original": original, "variants": rows}


# -- learning curve ------------------------------------------------------------------------------------
def submit_random(pool: JobPool, engine, cfg, seed: int) -> dict[int, str]:
    """One uniformly random schedule (the bandit's schedule space) per held-out task, seeded."""
    from metactl.envs.spaces import ScheduleSpace

    space = ScheduleSpace(tuple(engine.tool_names), engine.layer_map.groups, cfg.env.phases,
                          train_range=cfg.env.train_range)
    out = {}
    for ts in cfg.eval_task_seeds:
        rng = np.random.default_rng([cfg.seed, ts])
        out[ts] = pool.submit(space.schedule(rng.uniform(-1, 1, space.dim), name=RANDOM_SCHEDULES), ts, seed)
    return out


def learning(rd: RunDir, pool: JobPool, random_keys: dict[int, str]) -> dict:

    rows = [r for r in read_jsonl(rd.path / SCORES, appended=True) if r.get("return") is not None]
    rows.sort(key=lambda r: r["episode"])
    curve: dict[str, list] = {"episode": [], "return": [], **{p: [] for p in HEADLINE_PARTS}}
    for r in rows:
        scores = r.get("scores") or {}
        if not all(p in scores for p in HEADLINE_PARTS):
            continue  # a diverged episode has no final scores
        curve["episode"].append(r["episode"])
        curve["return"].append(r["return"])
        for p in HEADLINE_PARTS:
            curve[p].append(scores[p])
    baselines: dict[str, dict[str, float]] = {}
    eval_path = rd.path / EVAL
    by_label: dict[str, list[dict]] = {}
    if eval_path.is_file():
        for r in finished_rows(read_jsonl(eval_path, appended=True)):
            # The run's own suite: eval_suites (families it never trained on) are reported apart.
            if r.get("suite", rd.config.run.suite) == rd.config.run.suite:
                by_label.setdefault(r["label"], []).append(r["scores"])
    if random_keys:
        by_label[RANDOM_SCHEDULES] = [pool.result(k) for k in random_keys.values()]
    for label, scores in by_label.items():
        baselines[label] = {p: statistics.mean(s[p] for s in scores) for p in HEADLINE_PARTS}
        baselines[label]["tasks"] = len(scores)
    return {"curve": curve, "baselines": baselines, "eval_task_seeds": list(rd.config.eval_task_seeds)}


# -- why -----------------------------------------------------------------------------------------------
def why(rd: RunDir, trace: Trace) -> dict:
    from metactl.commands.inspect.rollout import flat_controls
    from metactl.envs import ScheduleBanditEnv

    if not trace.decisions:
        return {
            "note": f"policy {rd.policy!r} does not read observations: its schedule is fixed for every task "
            "(a search keeps its best candidate), so there is no per-feature reason to show."
        }
    env, actor = trace.env, trace.actor
    bandit = isinstance(env, ScheduleBanditEnv)
    low, high = env.observation_space.low, env.observation_space.high
    features = env.observer.labels
    steps = []
    for d in trace.decisions:
        if bandit:

            def decode(a, env=env):
                return flat_controls(env.decode(a), env.space.merge)

            prior = decode(np.zeros(env.action_space.shape))
        else:

            def decode(a, env=env, p=d.step):
                return flat_phase(env.decode(p, a), merge_tools=env.controls.merge)

            prior = decode(np.zeros(env.action_space.shape))
        names, effect = perturbation_saliency(
            lambda b: actor.predict(b, deterministic=True)[0], decode, d.observation, low, high
        )
        totals = np.abs(effect).sum(axis=1)
        top = [
            {"feature": features[i], "value": float(d.observation[i]), "total_effect": float(totals[i])}
            for i in np.argsort(-totals)[:8]
            if totals[i] > 0
        ]
        steps.append(
            {
                "step": d.step,
                "observation": {f: float(v) for f, v in zip(features, d.observation)},
                "controls": names,
                "effect": effect.round(6).tolist(),
                "features": features,
                "top_features": top,
                "explanations": explain(names, effect, features, d.observation, d.controls, prior),
            }
        )
    return {
        "method": "perturbation: each feature moved by 10% of its range, greedy action decoded into controls",
        "prior": rd.prior,
        "steps": steps,
    }


# -- implantation --------------------------------------------------------------------------------------
def base_readout(engine) -> dict[str, list[float]]:
    # The model as loaded, even right after a rollout that merged adapters into the base.
    with engine.adapters.initial_weights(), engine.model.disable_adapter():
        return layer_readout(engine.model, engine.tokenizer, engine.task.suite)


def implantation_summary(report: dict) -> dict:
    """Per method and behaviour: the first layer whose readout reaches half the final gain over base."""
    readout = report["implantation"]["readout"]
    base = readout["base"]
    out: dict[str, dict] = {}
    for label, by_key in readout.items():
        if label == "base":
            continue
        for key, accs in by_key.items():
            gain = accs[-1] - base[key][-1]
            # The verdict is a threshold; the share of the gain already readable one layer down is the
            # continuous reading behind it (0: output only, 1: fully formed below the output).
            below = share_below_output(accs, base[key])
            if below is None:
                out.setdefault(label, {})[key] = {
                    "gain": gain,
                    "first_layer": None,
                    "below_output": None,
                    "verdict": "no gain at the output",
                }
                continue
            first = next(i for i, (a, b) in enumerate(zip(accs, base[key])) if a - b >= gain / 2)
            layers = len(accs)
            verdict = (
                "represented inside (readable before the last layer)"
                if first < layers - 1
                else "only at the output (last layer)"
            )
            out.setdefault(label, {})[key] = {
                "gain": gain,
                "first_layer": first,
                "below_output": below,
                "verdict": verdict,
            }
    return out
