import json

import pytest

from metactl.errors import ConfigError, DataError
from metactl.tasks import SUITES, load_suite
from metactl.tasks.suite import TOOL_FORMATS


@pytest.mark.parametrize("name", sorted(SUITES))
def test_builtin_suites_deterministic_and_seed_dependent(name):
    a, b, c = load_suite(name, 0), load_suite(name, 0), load_suite(name, 1)
    assert a.data == b.data and a.retain == b.retain
    assert a.data["sft"] != c.data["sft"]
    for tool, rows in a.data.items():
        assert all(set(TOOL_FORMATS[tool]) <= set(r) for r in rows)
    assert all(r["chosen"] != r["rejected"] for r in a.data["dpo"])
    for split in ("target", "heldout"):
        for b_ in a.behaviours:
            assert a.evals[split][b_.name]


def test_style_vs_truth_conflict_is_built_in():
    s = load_suite("style-vs-truth", 0)
    wrong = [r for r in s.data["sft"] if int(r["completion"].split()[0]) != _truth(r["prompt"])]
    assert 0.1 < len(wrong) / len(s.data["sft"]) < 0.7, "SFT data must carry systematic (dropped-carry) noise"
    assert all(r["prompt"].startswith("sum of") for r in s.data["sft"])
    assert not any(t.startswith("sum of") for t in s.retain), "retain must not contain the target template"


def _truth(prompt: str) -> int:
    words = prompt.split()
    return int(words[2]) + int(words[4])


def _write_suite(root, dpo_rows):
    (root / "eval").mkdir(parents=True)
    (root / "suite.yaml").write_text(
        "name: mine\nbehaviours: [{name: truth, tool: dpo}]\ndata: {dpo: dpo.jsonl}\n"
        "evals: {target: {truth: eval/t.jsonl}, heldout: {truth: eval/h.jsonl}}\nretain: eval/r.jsonl\n"
    )
    (root / "dpo.jsonl").write_text(dpo_rows)
    (root / "eval" / "t.jsonl").write_text("".join(_probe(f"{a}+1=") for a in range(1, 5)))
    (root / "eval" / "h.jsonl").write_text(_probe("9+9="))
    (root / "eval" / "r.jsonl").write_text("".join(json.dumps({"text": f"the cat sat {n}."}) + "\n" for n in range(4)))


def _probe(prompt: str) -> str:
    return json.dumps({"prompt": prompt, "chosen": " 2.", "rejected": [" 3.", " 11."]}) + "\n"


def test_user_suite_loads(tmp_path):
    _write_suite(tmp_path, json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    s = load_suite(str(tmp_path))
    assert s.name == "mine" and s.evals["target"]["truth"][0].rejected == [" 3.", " 11."]
    # No observe split in suite.yaml: the last quarter (rounded up) of the target probes and of the
    # retain texts is held back for the controller, and the reported scores use the rest.
    assert [i.prompt for i in s.observe["truth"]] == ["4+1="]
    assert [i.prompt for i in s.evals["target"]["truth"]] == ["1+1=", "2+1=", "3+1="]
    assert s.observe_retain == ["the cat sat 3."] and len(s.retain) == 3


def test_user_suite_observe_split_from_suite_yaml_and_its_checks(tmp_path):
    _write_suite(tmp_path, json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    spec = (tmp_path / "suite.yaml").read_text()
    observe = "heldout: {truth: eval/h.jsonl}, observe: {truth: eval/o.jsonl}}"
    (tmp_path / "suite.yaml").write_text(spec.replace("heldout: {truth: eval/h.jsonl}}", observe))
    (tmp_path / "eval" / "o.jsonl").write_text(_probe("7+7="))
    s = load_suite(str(tmp_path))
    assert [i.prompt for i in s.observe["truth"]] == ["7+7="] and len(s.evals["target"]["truth"]) == 4
    (tmp_path / "eval" / "o.jsonl").write_text(_probe("9+9="))  # a heldout prompt
    with pytest.raises(DataError, match="observe probe '9\\+9=' \\(truth\\) is also a reported probe"):
        load_suite(str(tmp_path))
    (tmp_path / "eval" / "o.jsonl").write_text(json.dumps({"prompt": "5+5=", "chosen": "", "rejected": " 3."}) + "\n")
    with pytest.raises(DataError, match="o.jsonl:1: chosen needs at least one non-empty completion"):
        load_suite(str(tmp_path))


def test_user_suite_without_observe_needs_two_target_probes(tmp_path):
    _write_suite(tmp_path, json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    (tmp_path / "eval" / "t.jsonl").write_text(_probe("1+1="))
    with pytest.raises(ConfigError, match="evals.target.truth has 1 probe; .* give at least 2"):
        load_suite(str(tmp_path))


@pytest.mark.parametrize("name", sorted(SUITES))
def test_builtin_observe_split_is_disjoint_from_every_reported_probe(name):
    """The controller's probes share no prompt with a reported probe and no retain text; a task's
    reported probes do not depend on the observe split (it draws from its own stream)."""
    for seed in (0, 1000, 3000):
        s = load_suite(name, seed)
        reported = s.reported_prompts()
        assert all(len(items) == 16 for items in s.observe.values()) and len(s.observe_retain) == 16
        assert not {i.prompt for items in s.observe.values() for i in items} & reported
        assert not set(s.observe_retain) & set(s.retain)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    _write_suite(tmp_path, json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"dpo.jsonl:2: malformed JSON"):
        load_suite(str(tmp_path))


def test_dpo_row_missing_rejected(tmp_path):
    _write_suite(tmp_path, json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    with pytest.raises(DataError, match=r"dpo.jsonl:1: .*missing field 'rejected'"):
        load_suite(str(tmp_path))


def test_unknown_suite_name():
    with pytest.raises(ConfigError, match="Did you mean 'style-vs-truth'"):
        load_suite("style-vs-trut")


def test_user_suite_from_a_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    _write_suite(tmp_path, "")
    datasets.Dataset.from_list([{"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}] * 3).save_to_disk(
        str(tmp_path / "dpo_ds")
    )
    (tmp_path / "suite.yaml").write_text((tmp_path / "suite.yaml").read_text().replace("dpo: dpo.jsonl", "dpo: dpo_ds"))
    s = load_suite(str(tmp_path))
    assert len(s.data["dpo"]) == 3 and s.data["dpo"][0]["rejected"] == " 3."
