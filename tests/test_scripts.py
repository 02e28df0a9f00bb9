"""The report scripts that read other reports: they must keep parsing what controller_report.py writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_lever_effect_pairs_the_shipped_reports_by_seed(tmp_path):
    from lever_effect import read_report

    five = read_report(REPO / "docs" / "controller_results.md", "ppo")
    assert set(five) == {"train-families", "heldout-families"}
    assert sorted(five["train-families"]["seeds"]["ppo"]) == [0, 1, 2, 3, 4]
    assert "expert" in five["heldout-families"]["fixed"] and "ppo" not in five["heldout-families"]["fixed"]
    one = read_report(REPO / "docs" / "controller_results_layer.md", "ppo")  # one seed: no per-seed rows
    assert list(one["train-families"]["seeds"]["ppo"]) == [0]

    out = tmp_path / "same.md"
    report = str(REPO / "docs" / "controller_results.md")
    subprocess.run([sys.executable, str(REPO / "scripts" / "lever_effect.py"), report, report, "--name", "nothing",
                    "--out", str(out)], check=True)
    text = out.read_text()
    assert "| mean ± std |" in text and "raised the gain on 0 of them" in text
    assert "paired difference +0.000, 95% interval [+0.000, +0.000] (t, 4 df" in text


def test_lever_effect_interval_is_the_t_interval():
    from lever_effect import paired_interval

    # mean 1, sample std sqrt(2/3), n 4: half width t(0.975, 3 df) = 3.182 times 0.8165 / 2 = 1.299
    assert "[-0.299, +2.299] (t, 3 df, sample std 0.816); it includes 0" in paired_interval([0.0, 1.0, 1.0, 2.0])
    assert "it excludes 0" in paired_interval([1.0, 1.1, 0.9, 1.0])
    assert paired_interval([2.0]) == "one seed: +2.000, no interval"


@pytest.mark.parametrize("script", ["lever_effect.py", "time_tests.py", "share_reach.py", "gpu_report.py",
                                    "obs_conditioning.py", "bench_controller.py", "obs_range.py",
                                    "step_sensitivity.py", "fit_gap.py", "schedule_ablation.py"])
def test_report_scripts_explain_themselves(script):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--help"], capture_output=True, text=True,
                          check=True)
    assert "usage" in proc.stdout and "python scripts/" + script in proc.stdout


def test_share_reach_projects_onto_what_a_share_only_action_runs():
    """The expert keeps its share ratios and loses only what no share-only action sets (DPO's output
    0.8 in its last phase); a schedule already in that space projects onto itself."""
    from share_reach import project

    from metactl.schedule import Schedule

    tools = ("sft", "dpo", "retain")
    prior, expert = Schedule.named("default", 2), Schedule.named("expert", 2)
    projected = project(expert, prior, tools)
    for ph, pr in zip(expert.phases, projected.phases):
        top, top_p = max(c.share for c in ph.tools.values()), max(c.share for c in pr.tools.values())
        assert {t: c.share / top for t, c in ph.tools.items()} == {t: c.share / top_p for t, c in pr.tools.items()}
        assert all(v == 1.0 for c in pr.tools.values() for grid in (c.train, c.output) for row in grid for v in row)
    assert expert.phases[-1].tools["dpo"].output[0][0] == 0.8
    assert project(prior, prior, tools).to_dict()["phases"] == project(
        project(prior, prior, tools), prior, tools).to_dict()["phases"]


def test_schedule_ablation_variants_change_one_thing_of_expert():
    from schedule_ablation import VARIANTS, variant_schedule

    from metactl.schedule import Schedule

    expert = Schedule.named("expert").to_dict()
    for name in VARIANTS:
        variant = variant_schedule(name).to_dict()
        changed = [(i, t, k) for i, (pe, pv) in enumerate(zip(expert["phases"], variant["phases"]))
                   for t in pe["tools"] for k in pe["tools"][t] if pe["tools"][t][k] != pv["tools"][t][k]]
        assert changed, name
        assert len({(t, k) for _, t, k in changed}) == 1, (name, changed)  # one control of one tool
    assert variant_schedule("dpo-late").phases[1].tools["dpo"].share == 0.0
    assert variant_schedule("no-retain").phases[-1].tools["retain"].share == 0.0


def test_gpu_report_is_what_its_logs_say():
    """docs/bench_gpu.md is made from the logs the GPU run left (docs/gpu_logs), never retyped."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_report.py"), "docs/gpu_logs"], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert proc.stdout == (REPO / "docs" / "bench_gpu.md").read_text()
    assert "| batched | cuda | 1 x 1 | 128 | 262.3 |" in proc.stdout  # the k.log rows are read too


def test_fit_gap_reads_the_averaged_rows_and_refuses_runs_averaged_on_other_tasks(tmp_path):
    """Held-out gains come from the averaged rows of the run's own suite only; runs whose training
    draws start at different tasks (so their averaged schedules came from different tasks), and
    "held-out" tasks inside a run's training draw, are refused before any episode runs."""
    from fit_gap import heldout_gains, main

    from metactl.policies.config import load_controller_config

    runs = []
    for name, seeds in (("a", "[0,16]"), ("b", "[8,64]")):
        run = tmp_path / name / "tc-s0"
        run.mkdir(parents=True)
        cfg = load_controller_config(None, [f"env.train_task_seeds={seeds}", "ppo.search_episodes=0"])
        (run / "config.yaml").write_text(cfg.to_commented_yaml())
        runs.append(run)
    rows = [{"label": "averaged", "suite": "s", "task_seed": 1000, "episode_seed": 1,
             "scores": {"composite": 2.5}, "base": {"composite": 1.0}},
            {"label": "ppo", "suite": "s", "task_seed": 1000, "episode_seed": 1,
             "scores": {"composite": 9.0}, "base": {"composite": 1.0}},
            {"label": "averaged", "suite": "other", "task_seed": 1000, "episode_seed": 1,
             "scores": {"composite": 9.0}, "base": {"composite": 1.0}}]
    (runs[0] / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert heldout_gains(runs[0], "s") == {(1000, 1): 1.5}
    with pytest.raises(SystemExit, match=r"draws training tasks from 8 \(env.train_task_seeds \[8, 64\]\)"):
        main(["--runs", *map(str, runs), "--out", str(tmp_path / "gap.md")])
    bare = tmp_path / "c" / "tc-s0"  # trained on the same tasks, never evaluated
    bare.mkdir(parents=True)
    (bare / "config.yaml").write_text((runs[0] / "config.yaml").read_text())
    with pytest.raises(SystemExit, match="eval.jsonl has no averaged rows on"):
        main(["--runs", str(runs[0]), str(bare), "--out", str(tmp_path / "gap.md")])
    with pytest.raises(SystemExit, match="task 5 is a training task"):
        main(["--runs", str(runs[0]), "--heldout", "1000", "5", "--out", str(tmp_path / "gap.md")])


def test_averaged_shares_puts_each_seeds_schedule_beside_its_gains(tmp_path):
    """Seeds sorted by the held-out families' ppo gain; a runs dir without averaged.yaml is named."""
    from averaged_shares import main

    report = REPO / "docs" / "controller_results_wide.md"
    runs = tmp_path / "runs"
    for seed in range(5):
        (runs / f"tc-s{seed}").mkdir(parents=True)
        (runs / f"tc-s{seed}" / "averaged.yaml").write_text(
            "schema_version: 1\nphases:\n"
            f"  - {{fraction: 0.5, tools: {{sft: {{share: 1.0}}, dpo: {{share: 0.{seed}}}}}}}\n"
            "  - {fraction: 0.5, tools: {dpo: {share: 1.0}, retain: {share: 0.25}}}\n"
        )
        episodes = [{"episode": e, "phase": p, "return": (seed + e / 10 if p == 1 else None)}
                    for e in range(20) for p in range(2)]
        (runs / f"tc-s{seed}" / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in episodes))
    out = tmp_path / "shares.md"
    main([str(report), "--runs", str(runs), "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "2", "0", "4", "3"]  # held-out ppo, best first
    assert "| +1.413 |" in rows[0] and "1.00 / 0.10 / 0.00 | 0.00 / 1.00 / 0.25 |" in rows[0]
    assert rows[0].endswith("| +2.150 |")  # seed 1: 1 + e / 10 averaged over the last 16 episodes, e = 4..19
    (runs / "tc-s3" / "averaged.yaml").unlink()
    with pytest.raises(SystemExit, match=r"seeds \[3\]"):
        main([str(report), "--runs", str(runs), "--out", str(out)])


def test_bench_counts_per_task_wins_over_every_seed_and_episode():
    """ppo is ahead on a task when its gain, averaged over the controller seeds and episode seeds of
    that task, beats the method's on the same pairs; a task the method never ran is left out."""
    from bench_controller import per_task_wins

    base = {"composite": 1.0}

    def row(label, task, episode, gain, family="f"):
        return {"label": label, "task_seed": task, "episode_seed": episode, "family": family, "suite": "s",
                "base": base, "scores": {"composite": 1.0 + gain}}

    by_seed = {
        0: [row("ppo", 1, 0, 0.5), row("ppo", 1, 1, 0.1), row("ppo", 2, 0, 0.2), row("expert", 1, 0, 0.2),
            row("expert", 1, 1, 0.2), row("expert", 2, 0, 0.4)],
        1: [row("ppo", 1, 0, 0.3), row("ppo", 2, 0, 0.6), row("expert", 1, 0, 0.2), row("expert", 2, 0, 0.4),
            row("mix", 2, 0, 0.0)],
    }
    table = per_task_wins(by_seed, "ppo")
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    # task 1: (0.3 + -0.1 + 0.1) / 3 = +0.100; task 2: (-0.2 + 0.2) / 2 = +0.000 (not ahead)
    assert lines["expert"] == "| expert | +0.100 | +0.000 | 1/2 |"
    assert lines["mix"] == "| mix | - | +0.600 | 1/1 |"


def test_step_sensitivity_jitters_shares_without_switching_tools_and_counts_moved_steps():
    import numpy as np
    from step_sensitivity import jittered, moved_steps, step_order

    from metactl.schedule import Schedule

    expert = Schedule.named("expert", 2)
    rng = np.random.default_rng(0)
    near = jittered(expert, rng, 0.1)
    for a, b in zip(expert.phases, near.phases):
        for tool, controls in a.tools.items():
            share = b.tools[tool].share
            assert (share == 0) == (controls.share == 0)
            assert controls.share * np.exp(-0.1) - 1e-9 <= share <= controls.share * np.exp(0.1) + 1e-9
    tools = list(expert.tool_names)
    order = step_order(expert, 96, tools, seed=0)
    assert len(order) == 96 and order[:24] == ["sft"] * 24  # expert's first phase is SFT alone
    assert moved_steps(expert, expert, 96, tools, 0) == 0
    more_sft = Schedule.named("expert", 2)
    more_sft.phases[1].tools["sft"].share = 2.0  # 1:2 -> 2:2 against DPO in phase 2: 8 of 24 steps become 12
    assert moved_steps(expert, more_sft, 96, tools, 0) == 4


def test_controller_report_lists_a_one_seed_run_in_its_per_seed_tables():
    """A lever stopped after one seed still gets its per-seed rows (averaged_shares.py reads them). (Made to
    fail once by telling seed-dependent methods by their means differing between seeds, which one seed never
    shows: the tables came out empty.)"""
    from controller_report import suite_section

    def row(label, task, gain):
        scores = {"target": 0.5, "heldout": 0.5, "stability": 0.5, "composite": 1.0 + gain}
        return {"label": label, "suite": "s", "task_seed": task, "episode_seed": 0, "family": "f",
                "scores": scores, "base": {"composite": 1.0}}

    rows = [row("ppo", t, 0.25) for t in (1, 2)] + [row("averaged", t, 0.5) for t in (1, 2)]
    rows += [row("expert", t, 0.75) for t in (1, 2)]
    text = suite_section("s", {0: rows}, "ppo", fixed={"expert"})
    per_seed = text.split("of each controller seed")[1].split("\n\n")[1]
    assert "| ppo | +0.250 |" in per_seed and "| averaged | +0.500 |" in per_seed and "expert" not in per_seed
    assert "| ppo | f | +0.250 |" in text
