"""The population engine gives each episode the scores the single-episode engine gives it alone."""

from __future__ import annotations

import os

import numpy as np
import pytest

from metactl.envs.spaces import ScheduleSpace
from metactl.schedule import Schedule, interleave

TOL = 1e-4  # fp32: every score to 1e-4 (margins, summed log-probs, to 1e-4 relative)


# METACTL_TEST_DEVICE=cuda runs these exactness checks on a GPU (both sides of every comparison there).
DEVICE = os.environ.get("METACTL_TEST_DEVICE", "cpu")
ON = [f"training.device={DEVICE}"]
# Observation entries that move far more than rounding when the weights move by rounding: gnorm/retain,
# the norm of retain's KL gradient near the KL's minimum, a difference of two nearly equal softmaxes,
# moves by up to 1.0e-3 when every base weight is perturbed at 1e-7 (docs/obs_conditioning.md). A GPU's
# kernels round differently from each other (batched vs alone), so there such an entry is held to its
# measured sensitivity; on the CPU both paths round alike and TOL holds for every entry.
ILL_CONDITIONED = {"gnorm/retain": 2e-3} if DEVICE != "cpu" else {}
CHEAP = ["training.total_steps=16", "training.score_every_phase=false", "training.score_probes=8", *ON]


@pytest.fixture(scope="module")
def engine():
    from metactl.config import load_config
    from metactl.runner import Engine

    return Engine(load_config(None, CHEAP), progress=False)


@pytest.fixture(scope="module")
def population(engine):
    from metactl.population import Population

    return Population(engine.config, 4)


def _random_schedule(engine, seed: int) -> Schedule:
    space = ScheduleSpace(tuple(engine.tool_names), engine.layer_map.groups, 3)
    return space.schedule(np.random.default_rng(seed).uniform(-1, 1, space.dim), name=f"random-{seed}")


def _assert_same(alone, together) -> None:
    assert len(alone) == len(together)
    for a, b in zip(alone, together):
        assert a.tool_steps == b.tool_steps and a.steps == b.steps
        for t in a.losses:
            assert b.losses[t] == pytest.approx(a.losses[t], abs=TOL), t
        for t in a.norms:
            assert b.norms[t] == pytest.approx(a.norms[t], abs=TOL), t
        assert set(a.scores) == set(b.scores)
        for key, value in a.scores.items():
            # Margins are summed log-probs (tens of nats): float32 noise in them scales with their size.
            rel = TOL if key.endswith("_margin") else 0.0
            assert b.scores[key] == pytest.approx(value, abs=TOL, rel=rel), key


def test_episodes_run_together_score_as_they_do_alone(engine, population):
    """Four different schedules (default, expert, two random) on four tasks, with different tools
    active at the same step, against the same (schedule, task, seed) run alone through Engine."""
    schedules = [Schedule.named("default"), Schedule.named("expert"), _random_schedule(engine, 1),
                 _random_schedule(engine, 2)]
    tasks, seeds = [0, 1, 2, 0], [11, 12, 13, 14]
    together = population.run(schedules, seeds, tasks, score_every_phase=True)
    first_tools = {interleave({t: c.share for t, c in s.phases[0].tools.items()}, 8)[0] for s in schedules}
    assert len(first_tools) > 1  # the batch really mixes tools at one step
    for sched, seed, task, got in zip(schedules, seeds, tasks, together):
        engine.load_task(task)
        _assert_same(engine.run(sched, seed=seed, score_every_phase=True), got)


def test_hand_rules_run_together_as_they_do_alone(engine, population):
    """ALRIGHT (random order), MAXRIGHT (order chosen from the losses, step by step) and mix (two
    tools per step) next to the default in one batch, against each run alone."""
    names = ["alright", "maxright", "mix", "default"]
    schedules = [Schedule.named(n) for n in names]
    tasks, seeds = [0, 1, 2, 3], [21, 22, 23, 24]
    together = population.run(schedules, seeds, tasks, score_every_phase=True)
    for name, sched, seed, task, got in zip(names, schedules, seeds, tasks, together):
        engine.load_task(task)
        alone = engine.run(sched, seed=seed, score_every_phase=True)
        _assert_same(alone, got)
        steps = alone[-1].tool_steps
        if name != "default":  # one phase: the 16 steps split between the two tools
            assert sum(steps.values()) == 16 and set(steps) == {"sft", "dpo"}, (name, steps)
        if name == "mix":
            assert steps == {"sft": 8, "dpo": 8}
    # The random order is the episode seed's: another seed draws another split of the steps.
    draws = {tuple(sorted(engine.run(schedules[0], seed=s)[-1].tool_steps.items())) for s in (21, 99, 5, 6)}
    assert len(draws) > 1, draws


def test_observe_readings_between_phases_match(engine, population):
    sched = Schedule.named("expert")
    together = population.run([sched, sched], [3, 4], [5, 6], observe_probes=8)
    for seed, task, got in zip([3, 4], [5, 6], together):
        engine.load_task(task)
        alone = engine.run(sched, seed=seed, observe_probes=8)
        assert "observe/composite" in got[0].scores and "composite" not in got[0].scores
        _assert_same(alone, got)


def test_slots_are_independent_of_their_neighbours(population):
    """An episode's results do not depend on which other episodes share its batch."""
    expert, default = Schedule.named("expert"), Schedule.named("default")
    with_default = population.run([expert, default], [7, 8], [0, 1])[0]
    with_itself = population.run([expert, expert, expert], [7, 9, 10], [0, 2, 3])[0]
    assert with_default[-1].scores == pytest.approx(with_itself[-1].scores, abs=TOL)


def test_interference_readings_match(engine, population):
    sched = Schedule.named("expert")
    population.run([sched, sched], [1, 2], [0, 3])
    got = population.gradient_cosines([0, 1])
    for k, (seed, task) in enumerate([(1, 0), (2, 3)]):
        engine.load_task(task)
        engine.run(sched, seed=seed)
        alone = engine.gradient_cosines(8)
        for pair, values in alone.items():
            assert got[k][pair] == pytest.approx(values, abs=TOL), pair


def test_an_episode_exports_peft_adapters_that_reload_with_plain_peft(engine, population, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    results = population.run([Schedule.named("expert")], [5], [0])[0]
    population.adapters.save(0, tmp_path, str(population.model_path))
    base = AutoModelForCausalLM.from_pretrained(population.model_path).to(engine.device).eval()
    tools = population.tool_names
    model = PeftModel.from_pretrained(base, str(tmp_path / tools[0]), adapter_name=tools[0])
    for t in tools[1:]:
        model.load_adapter(str(tmp_path / t), adapter_name=t)
    model.base_model.set_adapter(tools)
    engine.load_task(0)
    rescored = engine.task.scorer.score(model)
    assert rescored["composite"] == pytest.approx(results[-1].scores["composite"], abs=TOL)


def _assert_close(got, want, labels: list[str] | None) -> None:
    """Within TOL (ILL_CONDITIONED's tolerance for those labels; numpy's default rtol on top), else name
    the entries that differ (by observation label where known): a GPU run reports what to look at."""
    atol = np.array([ILL_CONDITIONED.get(x, TOL) for x in labels]) if labels else TOL
    bad = np.argwhere(~np.isclose(got, want, atol=atol))
    where = [(labels[i[-1]] if labels else tuple(i), float(got[tuple(i)]), float(want[tuple(i)])) for i in bad[:8]]
    assert not len(bad), f"{len(bad)} entries differ (label or index, got, want): {where}"


def test_batched_vec_env_steps_as_the_envs_do_alone():
    """vec_env batched, in this process and split over two processes (3 envs: shards of 2 and 1),
    against dummy (the same phase env, one episode at a time), same seeds and actions, through an
    automatic reset; get_attr and env_method reach the env they name wherever it runs."""
    from metactl.config import load_config
    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.config import EnvConfig
    from metactl.envs.vector import make_venv

    run = load_config(None, ["training.total_steps=8", "training.layer_groups=2", "training.score_probes=8", *ON])
    env = EnvConfig(phases=2, quick_probes=4, interference_rows=4)
    n = 3
    traces, rngs = {}, {}
    labels = None
    for kind, processes in (("batched", 1), ("batched", 2), ("dummy", 1)):
        venv = make_venv(PHASE_ENV_ID, run, env, n, kind, processes=processes)
        try:
            venv.seed(3)
            rng = np.random.default_rng(0)
            trace = [venv.reset()]
            for _ in range(3):
                actions = rng.uniform(-0.5, 0.5, (n, *venv.action_space.shape)).astype("f4")
                obs, rewards, dones, infos = venv.step(actions)
                trace.append((obs, rewards, dones, [i.get("episode_return") for i in infos]))
            traces[kind, processes] = trace
            labels = labels or getattr(venv, "reset_infos", [{}])[0].get("observation_labels")
            rngs[kind, processes] = [g.bit_generator.state for g in venv.get_attr("np_random", indices=[2, 0])]
            assert venv.env_method("set_worker_index", 2, indices=[2]) == [None]
        finally:
            venv.close()
    dummy = traces["dummy", 1]
    for processes in (1, 2):
        batched = traces["batched", processes]
        assert rngs["batched", processes] == rngs["dummy", 1]
        _assert_close(batched[0], dummy[0], labels)
        for (o1, r1, d1, e1), (o2, r2, d2, e2) in zip(batched[1:], dummy[1:]):
            _assert_close(o1, o2, labels)
            _assert_close(r1, r2, None)
            assert (d1 == d2).all()
            assert [e is None for e in e1] == [e is None for e in e2]
            assert all(a is None or a == pytest.approx(b, abs=TOL) for a, b in zip(e1, e2))
        assert batched[2][2].all()  # the episodes ended and were reset, as SB3 VecEnvs do


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [x for v in tree for x in _leaves(v)]
    return [tree] if isinstance(tree, (int, float)) else []


class _ObsActor:
    """A deterministic closed-loop actor: its action depends on everything it observes."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def predict(self, obs, deterministic: bool = True):
        obs = np.asarray(obs, dtype=np.float64)
        return (0.3 * np.tanh(obs[: self.dim] + obs[-self.dim:])).astype("f4"), None


def test_batched_evaluation_jobs_match_the_envs_run_alone():
    """Evaluation under vec_env batched (jobs packed into passes of one kind, whichever env they were
    given to; fixed schedules and greedy actors; another suite's task; more jobs than envs) gives the results the
    dummy VecEnv gives running each job alone, in the same order."""
    from metactl.config import load_config
    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.config import EnvConfig
    from metactl.envs.jobs import Job
    from metactl.envs.vector import make_venv, run_jobs

    run = load_config(None, ["training.total_steps=8", "training.layer_groups=2", "training.score_probes=8", *ON])
    env = EnvConfig(phases=2, quick_probes=4, interference_rows=4)
    default, expert = Schedule.named("default", 2), Schedule.named("expert", 2)
    out = {}
    for kind, processes in (("batched", 1), ("batched", 2), ("dummy", 1)):
        venv = make_venv(PHASE_ENV_ID, run, env, 3, kind, processes=processes)
        try:
            actor = _ObsActor(venv.action_space.shape[0])
            jobs = [
                Job(1000, 0, schedule=default, label="default"),
                Job(1001, 1, actor=actor, label="actor"),
                Job(1000, 0, actor=actor, label="actor", suite="sycophancy"),
                Job(1002, 2, schedule=expert, label="expert", suite="sycophancy"),
                Job(1001, 0, schedule=expert, label="expert"),
            ]
            out[kind, processes] = run_jobs(venv, jobs)
        finally:
            venv.close()
    alone = out["dummy", 1]
    for key in (("batched", 1), ("batched", 2)):
        together = out[key]
        assert [(r["label"], r["suite"], r["family"], r["task_seed"]) for r in together] == [
            (r["label"], r["suite"], r["family"], r["task_seed"]) for r in alone
        ]
        for a, b in zip(alone, together):
            # An actor's controls follow its observations, equal to rounding: compare the numbers to TOL.
            assert _leaves(b["schedule"].to_dict()) == pytest.approx(_leaves(a["schedule"].to_dict()), abs=TOL)
            assert b["scores"]["composite"] == pytest.approx(a["scores"]["composite"], abs=TOL)
            assert b["base"]["composite"] == pytest.approx(a["base"]["composite"], abs=TOL)
    assert alone[2]["family"] == "sycophancy" and alone[0]["family"] == "style-vs-truth"


def test_batched_evaluation_packs_jobs_into_full_passes_of_one_kind(monkeypatch):
    """Fixed schedules and greedy actors given to the envs in turn, over two suites, run in as few
    passes as the env count allows: 6 jobs on 3 envs, 2 passes (round by round it took 5)."""
    from metactl.config import load_config
    from metactl.envs import PHASE_ENV_ID
    from metactl.envs.batched import BatchedVecEnv
    from metactl.envs.config import EnvConfig
    from metactl.envs.jobs import Job
    from metactl.envs.vector import make_venv, run_jobs

    run = load_config(None, ["training.total_steps=4", "training.layer_groups=2", "training.score_probes=4", *ON])
    env = EnvConfig(phases=1, quick_probes=4, interference_rows=4)
    default = Schedule.named("default", 2)
    passes: list[set[bool]] = []
    real = BatchedVecEnv._run_pass

    def counted(self, jobs):
        passes.append({job.schedule is not None for job in jobs.values()})
        return real(self, jobs)

    monkeypatch.setattr(BatchedVecEnv, "_run_pass", counted)
    venv = make_venv(PHASE_ENV_ID, run, env, 3, "batched", processes=1)
    try:
        actor = _ObsActor(venv.action_space.shape[0])
        jobs = [Job(1000 + i, 0, schedule=default, label="default", suite="sycophancy" if i == 2 else None)
                if i % 2 == 0 else Job(1000 + i, 0, actor=actor, label="actor") for i in range(6)]
        rows = run_jobs(venv, jobs)
    finally:
        venv.close()
    assert passes == [{True}, {False}]
    assert [(r["label"], r["task_seed"]) for r in rows] == [(j.label, j.task_seed) for j in jobs]
