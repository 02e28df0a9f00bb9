"""``inspect_run``: every reading of one run on one task, assembled into a plain JSON-able report.

What runs where: the main process loads one engine, replays the policy greedily on the task
(closed loop for SB3 controllers) and the ``default`` schedule beside it, and does everything
that needs the trained adapters (ablations, Shapley values, per-layer readouts, saliency).
Meanwhile worker processes train the schedule variants (a phase removed, phases swapped, a
tool's phases merged) and the random baseline, through the same runner.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from pathlib import Path

import numpy as np

from metactl.errors import ConfigError
from metactl.inspection.ablate import ModelAblation, kept_scores, merged, swapped, tool_steps, without_phase
from metactl.inspection.jobs import JobPool
from metactl.inspection.readout import layer_readout
from metactl.inspection.rollout import Trace, flat_phase, run_policy, run_schedule
from metactl.inspection.saliency import explain, perturbation_saliency
from metactl.inspection.shapley import leave_one_out, shapley
from metactl.inspection.source import EVAL, SCORES, RunDir, load_run_dir
from metactl.schedule import Schedule

log = logging.getLogger("metactl.inspect")
PARTS = ("target", "heldout", "stability", "composite")
RANDOM_SCHEDULES = "random"


def resolve_task_seed(run_dir: RunDir, task_seed: int | None) -> int:
    from metactl.tasks import check_task_seed

    seeds = run_dir.config.eval_task_seeds
    if task_seed is None:
        return seeds[0]
    hint = f" The run was judged on held-out task seeds {seeds}; --task-seed {seeds[0]} is the one its schedule.yaml shows."
    return check_task_seed("--task-seed", task_seed, hint)


def inspect_run(path: str | Path, task_seed: int | None = None, out: str | Path | None = None,
                workers: int = 2, progress: bool = True) -> dict:
    """Inspect the train-controller run at ``path`` on ``task_seed``; returns the report (see :mod:`.report`)."""
    import torch
    from tqdm.auto import tqdm

    from metactl.paths import resolve_schedule_path
    from metactl.runner import Engine

    t0 = time.perf_counter()
    rd = load_run_dir(path)
    task_seed = resolve_task_seed(rd, task_seed)
    if workers < 0:
        raise ConfigError(f"--workers: {workers} is negative; give 0 (train in this process) or more.")
    out = Path(out) if out is not None else rd.path / "inspect" / f"task-{task_seed}"
    out.mkdir(parents=True, exist_ok=True)
    cfg = rd.config
    run = copy.deepcopy(cfg.run)
    run.task_seed = task_seed
    seed = run.training.seed
    groups = run.training.layer_groups
    default = Schedule.load(resolve_schedule_path("default")).regroup(groups)
    default.name = "default"

    bar = tqdm(total=7, desc="inspect", unit="stage", disable=not progress)

    started: list[str] = []

    def stage(name: str) -> None:
        """Mark the previous stage done and show the one starting."""
        if started:
            bar.update(1)
        started.append(name)
        bar.set_postfix_str(name)

    pool = JobPool(run, out, workers)
    try:
        torch.set_num_threads(run.training.threads)
        engine = Engine(run, progress=False)
        pool.engine = engine  # with workers=0 the variants train here, after everything else
        total = run.training.total_steps
        random_keys = _submit_random(pool, engine, cfg, seed)
        default_variants = _submit_phase_ablations(pool, default, task_seed, seed)
        stage("greedy rollout")
        learned = run_policy(engine, rd, task_seed, seed, label=cfg.policy)
        learned.schedule.name = cfg.policy
        variants = _submit_phase_ablations(pool, learned.schedule, task_seed, seed)
        order = _submit_order(pool, learned.schedule, engine.tool_names, total, task_seed, seed)
        stage("attribution (learned)")
        learned_attr = _attribute(engine, learned)
        learned_readout = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
        stage("why")
        why = _why(rd, learned)
        stage("default episode")
        base_readout = _base_readout(engine)
        dflt = run_schedule(engine, default, seed, "default", cfg.env.quick_probes, cfg.env.interference_rows)
        stage("attribution (default)")
        default_attr = _attribute(engine, dflt)
        default_readout = layer_readout(engine.model, engine.tokenizer, engine.task.suite)
        stage("retrained variants")
        with tqdm(total=len(pool), desc="retraining variants", unit="episode", leave=False, disable=not progress) as vbar:
            for keys in (default_variants, variants, order, random_keys):
                for k in keys.values():
                    pool.result(k)
                    vbar.update(1)
        learned_attr["phases"] = _phase_loo(pool, variants, learned.final)
        default_attr["phases"] = _phase_loo(pool, default_variants, dflt.final)
        stage("learning curve")
        report = {
            "run_dir": str(rd.path.resolve()), "out": str(out.resolve()), "task_seed": task_seed, "episode_seed": seed,
            "policy": cfg.policy, "closed_loop": rd.closed_loop, "model": run.model, "suite": run.suite,
            "tools": list(engine.tool_names), "layer_groups": groups, "layers": len(learned_readout[next(iter(learned_readout))]),
            "total_steps": total, "layer_map": engine.layer_map.describe(),
            "decisions": {cfg.policy: _decisions(learned, total), "default": _decisions(dflt, total)},
            "learning": _learning(rd, pool, random_keys),
            "attribution": {cfg.policy: learned_attr, "default": default_attr},
            "order": _order(pool, order, learned),
            "why": why,
            "implantation": {
                "cosines": {cfg.policy: learned.cosines, "default": dflt.cosines},
                "cka": {label: [t.final[f"cka/{i}"] for i in range(_n_layers(t.final))] for label, t in ((cfg.policy, learned), ("default", dflt))},
                "cka_by_phase": {label: [[s[f"cka/{i}"] for i in range(_n_layers(s))] for s in t.phase_scores if s]
                                 for label, t in ((cfg.policy, learned), ("default", dflt))},
                "readout": {"base": base_readout, cfg.policy: learned_readout, "default": default_readout},
            },
            "retrained_episodes": pool.trained,
            "model_scorings": learned_attr.pop("_scorings") + default_attr.pop("_scorings"),
        }
        stage("done")
    finally:
        bar.close()
        pool.close()
    report["implantation"]["summary"] = implantation_summary(report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _n_layers(scores: dict) -> int:
    return sum(1 for k in scores if k.startswith("cka/"))


# -- decisions -----------------------------------------------------------------------------------------
def _decisions(trace: Trace, total_steps: int) -> dict:
    sched = trace.schedule
    steps = tool_steps(sched, total_steps)
    phases = []
    for i, (p, st) in enumerate(zip(sched.phases, steps)):
        phases.append({
            "phase": i, "fraction": p.fraction, "tool_steps": st,
            "tools": {t: {"share": c.share, "train": c.train, "output": c.output} for t, c in p.tools.items()},
        })
    return {"schedule": sched.to_dict(), "phases": phases, "final": kept_scores(trace.final), "base": kept_scores(trace.base),
            "phase_scores": [kept_scores(s) for s in trace.phase_scores], "norms": trace.norms}


# -- attribution ---------------------------------------------------------------------------------------
def _attribute(engine, trace: Trace) -> dict:
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
        "final": full, "base": base, "total_change": total,
        "tools": {"shapley": tool_values, "leave_one_out": leave_one_out(tools, tool_table),
                  "coalitions": {"+".join(sorted(s)) or "none": v for s, v in tool_table.items()}},
        "groups": {"shapley": {f"g{g}": v for g, v in group_values.items()}},
        "tool_groups": {f"{t} g{g}": v for (t, g), v in ablation.tool_group_loo(full).items()},
        "efficiency_gap": gap,
        "_scorings": ablation.evaluations,
    }


def _submit_phase_ablations(pool: JobPool, schedule: Schedule, task_seed: int, seed: int) -> dict[int, str]:
    return {i: pool.submit(without_phase(schedule, i), task_seed, seed) for i in range(len(schedule.phases))}


def _phase_loo(pool: JobPool, keys: dict[int, str], final: dict) -> dict:
    full = kept_scores(final)
    return {f"phase {i}": {k: full[k] - pool.result(key)[k] for k in full} for i, key in keys.items()}


# -- order and repetition ------------------------------------------------------------------------------
def _submit_order(pool: JobPool, schedule: Schedule, tools: list[str], total: int, task_seed: int, seed: int) -> dict[str, str]:
    variants = [swapped(schedule, i) for i in range(len(schedule.phases) - 1)]
    variants += [m for m in (merged(schedule, t, total) for t in tools) if m is not None]
    return {v.name: pool.submit(v, task_seed, seed) for v in variants}


def _order(pool: JobPool, keys: dict[str, str], trace: Trace) -> dict:
    original = kept_scores(trace.final)
    rows = []
    for name, key in keys.items():
        s = pool.result(key)
        rows.append({"variant": name, "scores": s, "delta": {k: s[k] - original[k] for k in original}})
    return {"original": original, "variants": rows}


# -- learning curve ------------------------------------------------------------------------------------
def _submit_random(pool: JobPool, engine, cfg, seed: int) -> dict[int, str]:
    """One uniformly random schedule (the bandit's schedule space) per held-out task, seeded."""
    from envs.spaces import ScheduleSpace

    space = ScheduleSpace(tuple(engine.tool_names), engine.layer_map.groups, cfg.env.phases)
    out = {}
    for ts in cfg.eval_task_seeds:
        rng = np.random.default_rng([cfg.seed, ts])
        out[ts] = pool.submit(space.schedule(rng.uniform(-1, 1, space.dim), name=RANDOM_SCHEDULES), ts, seed)
    return out


def _learning(rd: RunDir, pool: JobPool, random_keys: dict[int, str]) -> dict:
    from metactl.io import read_jsonl

    rows = [r for r in read_jsonl(rd.path / SCORES) if r.get("return") is not None]
    rows.sort(key=lambda r: r["episode"])
    curve: dict[str, list] = {"episode": [], "return": [], **{p: [] for p in PARTS}}
    for r in rows:
        scores = r.get("scores") or {}
        if not all(p in scores for p in PARTS):
            continue  # a diverged episode has no final scores
        curve["episode"].append(r["episode"])
        curve["return"].append(r["return"])
        for p in PARTS:
            curve[p].append(scores[p])
    baselines: dict[str, dict[str, float]] = {}
    eval_path = rd.path / EVAL
    by_label: dict[str, list[dict]] = {}
    if eval_path.is_file():
        for r in read_jsonl(eval_path):
            by_label.setdefault(r["label"], []).append(r["scores"])
    if random_keys:
        by_label[RANDOM_SCHEDULES] = [pool.result(k) for k in random_keys.values()]
    for label, scores in by_label.items():
        baselines[label] = {p: statistics.mean(s[p] for s in scores) for p in PARTS}
        baselines[label]["tasks"] = len(scores)
    return {"curve": curve, "baselines": baselines, "eval_task_seeds": list(rd.config.eval_task_seeds)}


# -- why -----------------------------------------------------------------------------------------------
def _why(rd: RunDir, trace: Trace) -> dict:
    from envs import ScheduleBanditEnv
    from envs.spaces import apply_residual
    from metactl.inspection.rollout import flat_controls

    if not trace.decisions:
        return {"note": f"policy {rd.policy!r} does not read observations: its schedule is fixed for every task "
                        "(a search keeps its best candidate), so there is no per-feature reason to show."}
    env, actor = trace.env, trace.actor
    bandit = isinstance(env, ScheduleBanditEnv)
    low, high = env.observation_space.low, env.observation_space.high
    features = env.observer.labels
    steps = []
    for d in trace.decisions:
        if bandit:
            def decode(a, env=env):
                return flat_controls(env.decode(a))
            prior = flat_controls(env.decode(np.zeros(env.action_space.shape)))
        else:
            n = rd.config.env.phases

            def decode(a, env=env, p=d.step, n=n):
                return flat_phase(env.controls.phase(apply_residual(env.prior[p], a), 1.0 / n))
            prior = decode(np.zeros(env.action_space.shape))
        names, effect = perturbation_saliency(lambda b: actor.predict(b, deterministic=True)[0], decode, d.observation, low, high)
        totals = np.abs(effect).sum(axis=1)
        top = [{"feature": features[i], "value": float(d.observation[i]), "total_effect": float(totals[i])}
               for i in np.argsort(-totals)[:8] if totals[i] > 0]
        steps.append({
            "step": d.step, "observation": {f: float(v) for f, v in zip(features, d.observation)},
            "controls": names, "effect": effect.round(6).tolist(), "features": features, "top_features": top,
            "explanations": explain(names, effect, features, d.observation, d.controls, prior),
        })
    return {"method": "perturbation: each feature moved by 10% of its range, greedy action decoded into controls", "steps": steps}


# -- implantation --------------------------------------------------------------------------------------
def _base_readout(engine) -> dict[str, list[float]]:
    with engine.model.disable_adapter():
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
            if gain <= 0.1:
                out.setdefault(label, {})[key] = {"gain": gain, "first_layer": None, "below_output": None, "verdict": "no gain at the output"}
                continue
            first = next(i for i, (a, b) in enumerate(zip(accs, base[key])) if a - b >= gain / 2)
            layers = len(accs)
            verdict = "represented inside (readable before the last layer)" if first < layers - 1 else "only at the output (last layer)"
            # The verdict is a threshold; the share of the gain already readable one layer down is the
            # continuous reading behind it (0: output only, 1: fully formed below the output).
            below = (accs[-2] - base[key][-2]) / gain if layers > 1 else 0.0
            out.setdefault(label, {})[key] = {"gain": gain, "first_layer": first, "below_output": below, "verdict": verdict}
    return out
