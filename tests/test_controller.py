"""train-controller: every policy end to end on a tiny budget, determinism, reload, bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metactl.commands.cli import app
from metactl.errors import ConfigError
from metactl.paths import CONFIGS
from metactl.policies import POLICIES
from metactl.policies.config import load_controller_config

REPO = Path(__file__).resolve().parents[1]
# Two phases of two steps, one held-out task, one process: seconds per episode, not minutes.
TINY = [
    "n_envs=1", "run.training.total_steps=4", "env.phases=2", "env.train_task_seeds=[0,2]",
    "eval_task_seeds=[1000]", "compare=[default]", "ppo.episodes_per_update=2",
    # Scored on fewer probes and on the training suite only (the held-out families have their own
    # test): the test suite's time goes to what each test checks, not to scoring.
    "run.training.score_probes=16", "eval_suites=[]",
    # One env cannot hold the default's mirrored pairs (tests/test_antithetic.py runs those).
    "ppo.group_size=1", "ppo.antithetic=false",
    # PPO alone from the first episode; the tests that start from a search say so.
    "ppo.search_episodes=0",
]


def _args(*extra: str) -> list[str]:
    out = []
    for o in [*TINY, *extra]:
        out += ["--set", o]
    return out


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "scores.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_train_controller_runs_every_policy(tmp_path, policy):
    out = tmp_path / policy
    res = CliRunner().invoke(
        app, ["train-controller", "--policy", policy, "--episodes", "2", "--out", str(out), "--quiet", *_args()]
    )
    assert res.exit_code == 0, res.output
    assert "x default gain" in res.output and policy in res.output
    cfg = load_controller_config(out / "config.yaml")
    assert cfg.policy == policy
    sched = (out / "schedule.yaml").read_text()
    assert "schema_version: 1" in sched
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert {e["label"] for e in evals} == {policy, "default"}
    if POLICIES[policy].learns:
        rows = _rows(out)
        assert sorted({r["episode"] for r in rows}) == [0, 1]
        assert all(r["task_seed"] in (0, 1) for r in rows)
        assert list((out / "checkpoints").glob("ckpt-*/state.json"))
        assert list((out / "tb").rglob("events.out.tfevents.*"))
        assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The acting policy's adapters on the first held-out task, in peft format.
    assert {p.name for p in (out / "adapters").iterdir()} == {"sft", "dpo", "retain"}
    assert (out / "adapters" / "sft" / "adapter_config.json").is_file()


def test_ppo_learns_something_and_reloads_in_a_fresh_process(tmp_path):
    """A tiny budget still moves the policy; controller.zip gives the same greedy actions elsewhere."""
    from stable_baselines3 import PPO

    from metactl.policies.sb3 import PPOPolicy

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train-controller", "--episodes", "4", "--out", str(out), "--quiet", *_args()])
    assert res.exit_code == 0, res.output
    model = PPO.load(out / "controller.zip", device="cpu")
    cfg = load_controller_config(out / "config.yaml")
    fresh = PPOPolicy(cfg)
    from metactl.commands.train_controller.run import make_venv

    venv = make_venv(cfg, fresh.env_id)
    try:
        fresh.setup(venv, None)
        init = fresh.model.policy.state_dict()
    finally:
        venv.close()
    trained = model.policy.state_dict()
    # The actor only (policy net, action head, log std): the value net moves under any training, so
    # counting it made this pass even for an actor that never changed.
    actor = [k for k in init if k == "log_std" or k.startswith(("mlp_extractor.policy_net", "action_net"))]
    assert actor and any(not np.allclose(init[k].numpy(), trained[k].numpy()) for k in actor), "the actor never moved"

    obs = np.random.default_rng(0).uniform(0, 1, (5, *model.observation_space.shape)).astype(np.float32)
    here = model.predict(obs, deterministic=True)[0]
    np.save(tmp_path / "obs.npy", obs)
    code = (
        # Same thread count as this process: a different one changes float summation order.
        "import numpy as np, torch; torch.set_num_threads(1); from stable_baselines3 import PPO; "
        f"m = PPO.load({str(out / 'controller.zip')!r}, device='cpu'); "
        f"np.save({str(tmp_path / 'act.npy')!r}, "
        f"m.predict(np.load({str(tmp_path / 'obs.npy')!r}), deterministic=True)[0])"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    np.testing.assert_array_equal(np.load(tmp_path / "act.npy"), here)


def test_learned_policy_is_judged_on_other_suites_and_against_its_average(tmp_path):
    """eval_suites adds task families the controller never trained on, reported apart; compare's
    'averaged' is the learned policy's phase controls averaged into one open-loop schedule."""
    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "train-controller", "--episodes", "2", "--out", str(out), "--quiet",
        *_args("compare=[default,averaged]", "eval_suites=[heldout-families]", "eval_episodes=2"),
    ])
    assert res.exit_code == 0, res.output
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert {e["label"] for e in evals} == {"ppo", "default", "averaged"}
    assert {e["suite"] for e in evals} == {load_controller_config(out / "config.yaml").run.suite, "heldout-families"}
    assert {e["episode_seed"] for e in evals} == {0, 1}
    assert len(evals) == 3 * 2 * 2  # methods x suites x episode seeds, on one task seed
    from metactl.schedule import Schedule

    averaged = Schedule.load(out / "averaged.yaml")  # kept for replay and transfer, as schedule.yaml
    assert len(averaged.phases) == 2 and "averaged" in averaged.name
    assert "heldout-families:" in res.output


def test_a_finished_run_widens_its_evaluation_without_retraining(tmp_path):
    """evaluate_missing re-runs the saved policy, its averaged.yaml and the fixed comparisons on the
    pairs eval.jsonl lacks: dropped rows come back with the same scores, and nothing runs twice."""
    from metactl.commands.train_controller.run import evaluate_missing

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "train-controller", "--episodes", "2", "--out", str(out), "--quiet",
        *_args("compare=[default,averaged]", "eval_episodes=2"),
    ])
    assert res.exit_code == 0, res.output
    lines = (out / "eval.jsonl").read_text().splitlines()
    kept = [x for x in lines if json.loads(x)["episode_seed"] == 0]
    dropped = {(r["label"], r["episode_seed"]): r for r in map(json.loads, lines) if r["episode_seed"] == 1}
    assert {label for label, _ in dropped} == {"ppo", "default", "averaged"}
    (out / "eval.jsonl").write_text("".join(x + "\n" for x in kept))

    cfg = load_controller_config(out / "config.yaml")
    assert evaluate_missing(cfg, out) == 3
    back = {(r["label"], r["episode_seed"]): r for r in map(json.loads, (out / "eval.jsonl").read_text().splitlines())}
    for key, row in dropped.items():
        assert back[key]["scores"] == pytest.approx(row["scores"], abs=1e-6), key
    assert evaluate_missing(cfg, out) == 0  # every pair there: nothing runs
    wider = load_controller_config(out / "config.yaml", ["eval_task_seeds=[1000,1001]"])
    assert evaluate_missing(wider, out) == 3 * 2  # methods x episode seeds on the new task
    rows = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2 and {r["task_seed"] for r in rows} == {1000, 1001}


@pytest.mark.parametrize("searched", [0, 2])
def test_same_seed_twice_gives_identical_actions_and_rewards(tmp_path, searched):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = CliRunner().invoke(app, [
            "train-controller", "--episodes", "4", "--seed", "3", "--out", str(out), "--quiet",
            *_args(f"ppo.search_episodes={searched}"),
        ])
        assert res.exit_code == 0, res.output
        stages = [out / "search", out] if searched else [out]
        runs.append([(r["episode"], r["phase"], r["task_seed"], r["controls"], r["scores"], r["return"])
                     for stage in stages for r in _rows(stage)])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 4 * 2  # every episode of the budget, search and PPO together, 2 phases each


@pytest.mark.parametrize("searched", [0, 4])
def test_sigkill_then_resume_reaches_the_budget_without_duplicate_rows(tmp_path, searched):
    """Killed mid-PPO (PPO alone), or mid-search (searching the first half): the resumed run ends with
    every episode of each stage once, and a torn checkpoint is skipped."""
    out = tmp_path / "run"
    killed_in = out / "search" if searched else out
    cmd = [
        sys.executable,
        "-m",
        "metactl",
        "train-controller",
        "--episodes",
        "8",
        "--out",
        str(out),
        "--quiet",
        *_args(f"ppo.search_episodes={searched}"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    mark = "ckpt-000002" if searched else "ckpt-000004"
    while time.time() < deadline and not (killed_in / "checkpoints" / mark / "state.json").exists():
        time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_rows = _rows(killed_in)
    assert killed_rows, "the run wrote nothing before the kill"
    assert not (searched and (out / "scores.jsonl").exists()), "killed in the search, PPO must not have started"
    # A checkpoint that was being written when the process died (no state.json) must be skipped.
    (killed_in / "checkpoints" / "ckpt-000099").mkdir()
    (killed_in / "checkpoints" / "ckpt-000099" / "controller.zip").write_bytes(b"torn")

    res = subprocess.run(
        [sys.executable, "-m", "metactl.commands.cli", "train-controller", "--resume", str(out), "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "skipping incomplete checkpoint" in res.stderr
    for stage, episodes in ([(out / "search", 4), (out, 4)] if searched else [(out, 8)]):
        rows = _rows(stage)
        keys = [(r["episode"], r["phase"]) for r in rows]
        assert len(keys) == len(set(keys)), "duplicate rows after resume"
        assert sorted({r["episode"] for r in rows}) == list(range(episodes))
        assert all(sorted(r["phase"] for r in rows if r["episode"] == e) == [0, 1] for e in range(episodes))
    # Rows written before the kill for episodes the checkpoint covered are kept as they were.
    kept = {(r["episode"], r["phase"]): r for r in _rows(killed_in)}
    for r in killed_rows:
        if r["episode"] < int(mark[-6:]):
            assert kept[(r["episode"], r["phase"])] == r
    assert (out / "controller.zip").is_file() and (out / "schedule.yaml").is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("policy=pop", "Did you mean 'ppo'"),
        ("total_episodes=0", r"total_episodes: got 0; allowed range is \[1"),
        ("run.reward.target=0", None),
        ("run.reward.stability=-1", r"reward.stability: got -1"),
        ("eval_task_seeds=[3]", r"lie inside env.train_task_seeds"),
        ("env.prior=nope", "neither a built-in one"),
        ("compare=[defualt]", "Did you mean 'default'"),
        ("ppo.n_epochs=0", r"ppo.n_epochs: got 0"),
        ("run.modle=x", "Did you mean 'model'"),
    ],
)
def test_bad_config_fails_before_training_with_the_fix(tmp_path, no_weights, override, message):
    extra = ["run.reward.heldout=0", "run.reward.stability=0"] if override == "run.reward.target=0" else []
    message = message or "are all zero"
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app, ["train-controller", "--out", str(out), "--set", override, *[x for e in extra for x in ("--set", e)]]
    )
    assert res.exit_code == 2, res.output
    assert "error:" in res.output
    import re

    assert re.search(message, res.output), res.output
    assert not out.exists()


def test_default_config_file_matches_the_code_defaults():
    """configs/train/default.yaml is what train-controller runs with no arguments: every field equals
    the code's default except the ones it documents (2 layer groups; trained on the four training task
    families for 96 episodes, judged also on the held-out ones; share-only controls; mirrored pairs of
    episodes), and its text is the config's own
    commented YAML. (Made to fail once by editing ppo.n_epochs in the file, which the old two-field
    check missed.)"""
    from metactl.policies.config import ControllerConfig

    path = CONFIGS / "train" / "default.yaml"
    cfg = load_controller_config(path)
    expected = ControllerConfig()
    expected.run.training.layer_groups = 2
    expected.run.suite, expected.eval_suites = "train-families-wide", ["heldout-families"]
    expected.env.controls = "share"
    expected.total_episodes = 96
    expected.ppo.group_size, expected.ppo.antithetic = 2, True
    assert expected.ppo.search_episodes == "auto"  # half of the 96 searched first (tests/test_search_start.py)
    assert cfg == expected
    body = "".join(path.read_text().splitlines(True)[2:])  # after the two header comment lines
    assert body == cfg.to_commented_yaml(), "regenerate the file from ControllerConfig.to_commented_yaml()"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only reading of auto")
def test_batched_processes_follow_the_device_auto_resolves_to():
    """training.device=auto on a machine without a GPU is the CPU, so vec_env batched splits the episodes
    over every core as under device=cpu (a run trained on a GPU with auto and evaluated here once got one
    process, half the cores idle)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for device in ("cpu", "auto"):
        cfg = load_controller_config(None, [f"run.training.device={device}", "n_envs=64"])
        assert cfg.processes() == min(cores, 64)


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path):
    res = CliRunner().invoke(app, ["train-controller", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "not a train-controller run dir" in res.output


def test_out_that_holds_files_is_not_overwritten(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    res = CliRunner().invoke(app, ["train-controller", "--out", str(tmp_path), *_args()])
    assert res.exit_code == 2 and "never writes over them" in res.output
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_unknown_policy_is_a_config_error_where_policies_are_built():
    """The name is checked by the policy registry (not by the config class), before anything is written."""
    from metactl.commands.train_controller.config import check
    from metactl.policies import make_policy

    cfg = load_controller_config(None, ["policy=ppo2"])
    for build in (make_policy, check):
        with pytest.raises(ConfigError, match=f"allowed: {', '.join(sorted(POLICIES))}"):
            build(cfg)


def test_evaluation_jobs_spread_over_subprocess_workers_come_back_in_order():
    """With SubprocVecEnv each worker runs its share of the jobs; results keep the job order."""
    from metactl.commands.train_controller.run import make_venv
    from metactl.envs.jobs import Job
    from metactl.envs.vector import run_jobs
    from metactl.schedule import Schedule

    cfg = load_controller_config(None, [*TINY, "n_envs=2", "env.phases=1"])
    venv = make_venv(cfg, "metactl/ScheduleBandit-v0")
    try:
        default = Schedule.load(CONFIGS / "schedules" / "default.yaml").regroup(cfg.run.training.layer_groups)
        jobs = [Job(task_seed=ts, episode_seed=0, schedule=default, label=f"job{ts}") for ts in (1000, 1001, 1002)]
        results = run_jobs(venv, jobs)
    finally:
        venv.close()
    assert [r["label"] for r in results] == ["job1000", "job1001", "job1002"]
    assert [r["task_seed"] for r in results] == [1000, 1001, 1002]
    assert all(np.isfinite(r["scores"]["composite"]) for r in results)


@pytest.mark.parametrize("use_sde", [False, True])
@pytest.mark.parametrize("policy", ["ppo", "bandit"])
def test_share_log_std_init_sets_only_the_share_actions(policy, use_sde, tmp_path):
    """ppo.share_log_std_init widens exploration of which tools run, not of how hard they train; under
    gSDE (a noise matrix over the policy's hidden layer) it sets the share actions' columns, and the
    policy survives a save/load round trip."""
    from metactl.commands.train_controller.run import make_venv
    from metactl.policies import make_policy

    cfg = load_controller_config(
        None, [*TINY, "vec_env=dummy", f"policy={policy}", "ppo.log_std_init=-1.5", "ppo.share_log_std_init=-0.5",
               f"ppo.use_sde={str(use_sde).lower()}"]
    )
    learner = make_policy(cfg)
    venv = make_venv(cfg, learner.env_id)
    try:
        learner.setup(venv, None)
        space = venv.get_attr("controls" if policy == "ppo" else "space", indices=[0])[0]
        obs = venv.observation_space.sample()
        learner.save(tmp_path)
        again = make_policy(cfg)
        again.setup(venv, None)
        again.load(tmp_path, venv)
    finally:
        venv.close()
    log_std = learner.model.policy.log_std.detach().numpy()
    shares = np.array([label.endswith(".share") for label in space.labels()])
    assert shares.any() and (~shares).any()
    assert learner.model.use_sde is use_sde and log_std.ndim == (2 if use_sde else 1)
    columns = log_std.T if use_sde else log_std
    assert np.allclose(columns[shares], -0.5) and np.allclose(columns[~shares], -1.5)
    assert np.allclose(again.model.policy.log_std.detach().numpy(), log_std)
    act = [p.model.predict(obs, deterministic=True)[0] for p in (learner, again)]
    assert np.allclose(*act)


def test_tuned_lr_searches_learning_rates_under_share_only_controls(engine):
    """The default config's env.controls=share leaves the bandit's schedule space without learning
    rates; tuned-lr asks for the full space instead (every trial would otherwise be the prior), and
    refuses a shares-only env with the fix."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metactl.envs import ScheduleBanditEnv
    from metactl.policies import make_policy

    cfg = load_controller_config(CONFIGS / "train" / "default.yaml", ["policy=tuned-lr", "seed=0"])
    assert cfg.env.controls == "share"
    policy = make_policy(cfg)
    env = ScheduleBanditEnv(engine.config, policy.env_config(cfg.env), engine=engine)
    policy.setup(DummyVecEnv([lambda: env]), None)
    first, *rest = policy.propose(4)
    assert not first.any()  # the first trial is the prior itself
    trains = [env.decode(a).phases[0].tools["sft"].train[0][0] for a in rest]
    assert all(0.25 <= t <= 4.0 for t in trains) and any(abs(t - 1.0) > 1e-3 for t in trains)

    shares_only = ScheduleBanditEnv(engine.config, cfg.env, engine=engine)
    with pytest.raises(ConfigError, match="no learning-rate controls.*env.controls=layer"):
        make_policy(cfg).setup(DummyVecEnv([lambda: shares_only]), None)


def test_train_controller_writes_the_envelope_and_evaluates_the_enveloped_policy(tmp_path):
    """compare's 'enveloped' is the trained policy, closed loop, inside the range of its own actions
    on the training tasks 'averaged' is made from; a run without it gets it from evaluate_missing."""
    from metactl.commands.train_controller.run import evaluate_missing

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "train-controller", "--episodes", "2", "--out", str(out), "--quiet",
        *_args("compare=[default,averaged,enveloped]"),
    ])
    assert res.exit_code == 0, res.output
    from metactl.policies.envelope import ActionEnvelope

    env = ActionEnvelope.load(out / "envelope.json")
    assert env.phases == 2 and env.tasks == 2  # env.train_task_seeds=[0,2]: two training tasks
    rows = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    by_label = {r["label"]: r for r in rows}
    assert set(by_label) == {"ppo", "default", "averaged", "enveloped"}
    assert "actions" not in by_label["default"] and "actions" not in by_label["averaged"]
    acted = np.asarray(by_label["enveloped"]["actions"])
    assert acted.shape == (2, np.asarray(env.low).shape[1])
    assert (acted >= np.asarray(env.low) - 1e-6).all() and (acted <= np.asarray(env.high) + 1e-6).all()
    ppo = np.asarray(by_label["ppo"]["actions"])
    # Where the closed loop's own action lies inside the envelope, enveloping changes nothing.
    inside = (ppo >= np.asarray(env.low)) & (ppo <= np.asarray(env.high))
    np.testing.assert_allclose(acted[inside], ppo[inside], atol=1e-6)

    # A run made before the envelope existed: evaluate_missing takes it and adds the actor's rows.
    (out / "envelope.json").unlink()
    (out / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] != "enveloped"))
    cfg = load_controller_config(out / "config.yaml", ["compare=[default,averaged,enveloped]"])
    assert evaluate_missing(cfg, out) == 1
    assert ActionEnvelope.load(out / "envelope.json") == env  # the same greedy rollouts, the same range
    again = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["scores"] for r in again if r["label"] == "enveloped"] == [by_label["enveloped"]["scores"]]


def test_train_controller_writes_the_guard_and_evaluates_the_guarded_policy(tmp_path):
    """compare's 'guarded' is the trained policy, closed loop where its observation lies as near a
    training rollout's as those lie to each other, else their mean action; a run without guard.json
    gets it from evaluate_missing, from the same greedy rollouts."""
    from metactl.commands.train_controller.run import evaluate_missing
    from metactl.policies.guard import ObservationGuard

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "train-controller", "--episodes", "2", "--out", str(out), "--quiet",
        *_args("compare=[default,averaged,guarded,guarded-hold]"),
    ])
    assert res.exit_code == 0, res.output
    guard = ObservationGuard.load(out / "guard.json")
    assert guard.phases == 2 and guard.rollouts == 2  # env.train_task_seeds=[0,2]: two training tasks
    rows = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    by_label = {r["label"]: r for r in rows}
    assert set(by_label) == {"ppo", "default", "averaged", "guarded", "guarded-hold"}
    assert not any("observations" in r for r in rows)  # kept in guard.json, not in every eval row
    acted, ppo = np.asarray(by_label["guarded"]["actions"]), np.asarray(by_label["ppo"]["actions"])
    # Phase by phase, the guarded policy either acts as the policy does or takes the fallback.
    for phase, (a, p) in enumerate(zip(acted, ppo)):
        assert np.allclose(a, p, atol=1e-6) or np.allclose(a, guard.fallback[phase], atol=1e-6)
    # The training rollouts themselves are familiar: acting on one, the guard never falls back.
    seen = np.asarray(guard.observations)
    assert not any(guard.unfamiliar(p, seen[r, p]) for r in range(guard.rollouts) for p in range(guard.phases))

    (out / "guard.json").unlink()
    (out / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if "guarded" not in r["label"]))
    cfg = load_controller_config(out / "config.yaml", ["compare=[default,averaged,guarded,guarded-hold]"])
    assert evaluate_missing(cfg, out) == 2
    again = ObservationGuard.load(out / "guard.json")
    np.testing.assert_allclose(again.observations, guard.observations, atol=1e-6)
    rerun = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["scores"] for r in rerun if r["label"] == "guarded"] == [by_label["guarded"]["scores"]]
