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
    probe = json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": [" 3.", " 11."]}) + "\n"
    (root / "eval" / "t.jsonl").write_text(probe)
    (root / "eval" / "h.jsonl").write_text(probe)
    (root / "eval" / "r.jsonl").write_text(json.dumps({"text": "the cat sat."}) + "\n")


def test_user_suite_loads(tmp_path):
    _write_suite(tmp_path, json.dumps({"prompt": "1+1=", "chosen": " 2.", "rejected": " 3."}) + "\n")
    s = load_suite(str(tmp_path))
    assert s.name == "mine" and s.evals["target"]["truth"][0].rejected == [" 3.", " 11."]


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
