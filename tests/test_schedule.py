import math

import pytest
import yaml

from metactl.errors import ConfigError
from metactl.schedule import Schedule, interleave, parse_schedule


def _phase(fraction=1.0, **tools):
    return {"fraction": fraction, "tools": tools or {"sft": {"share": 1.0}}}


def _sched(*phases, **top):
    return {"schema_version": 1, "layer_groups": 4, "phases": list(phases), **top}


@pytest.mark.parametrize("name", ["default", "expert", "alright", "maxright", "mix"])
def test_builtin_schedules_round_trip(name, tmp_path):
    s = Schedule.named(name)
    s.save(tmp_path / "s.yaml")
    assert Schedule.load(tmp_path / "s.yaml") == s


def test_per_group_and_kind_forms_round_trip(tmp_path):
    s = parse_schedule(
        _sched(
            _phase(
                0.25,
                sft={"share": 2, "train": [0, 0, 1, 1], "output": {"attn": 0.5, "mlp": [1, 1, 0.7, 0.7]}},
                dpo={"share": 1},
            ),
            _phase(0.75, dpo={"share": 1, "train": {"attn": 0.0, "mlp": 2.0}}),
        )
    )
    assert s.phases[0].tools["sft"].output == [[0.5] * 4, [1, 1, 0.7, 0.7]]
    # sft is omitted in phase 1: no steps there, and it keeps its previous output scale
    assert s.phases[1].tools["sft"].share == 0 and s.phases[1].tools["sft"].output == s.phases[0].tools["sft"].output
    s.save(tmp_path / "s.yaml")
    assert Schedule.load(tmp_path / "s.yaml") == s
    assert yaml.safe_load((tmp_path / "s.yaml").read_text())["schema_version"] == 1


@pytest.mark.parametrize(
    "data, needle",
    [
        (_sched(_phase(sfft={"share": 1})), "did you mean 'sft'"),
        (_sched(_phase(sft={"share": 1, "output": -0.5})), "allowed range is [0, 2]"),
        (_sched(_phase(sft={"share": 1, "train": float("nan")})), "finite"),
        (_sched(_phase(sft={"share": -1})), "share: got -1"),
        (_sched(_phase(0.5), _phase(0.3)), "sum to 0.8"),
        (_sched(_phase(), layer_groups=0), "layer_groups: got 0"),
        ({"schema_version": 7, "phases": [_phase()]}, "schema_version 7 is not supported"),
        (_sched(_phase(sft={"share": 1, "output": [1, 1]})), "one value per group"),
        (_sched(_phase(sft={"share": 1, "scale": 1})), "did you mean 'share'"),
        (_sched(_phase(sft={"share": 1, "output": {"atn": 1}})), "did you mean 'attn'"),
        (_sched(), "non-empty list"),
        (_sched({**_phase(), "order": "randm"}), "phases[0].order: unknown value 'randm'"),
        (_sched({**_phase(), "ordre": "random"}), "did you mean 'order'"),
    ],
)
def test_bad_schedules_name_field_and_fix(data, needle):
    with pytest.raises(ConfigError) as err:
        parse_schedule(data, "s.yaml")
    assert needle.lower() in str(err.value).lower()
    assert "s.yaml" in str(err.value)


def test_phase_steps_sum_exactly():
    s = parse_schedule(_sched(_phase(1 / 3), _phase(1 / 3), _phase(1 / 3)))
    assert sum(s.phase_steps(100)) == 100
    assert s.phase_steps(100) == [34, 33, 33]


def test_interleave_matches_shares_and_alternates():
    order = interleave({"sft": 1.0, "dpo": 1.0}, 6)
    assert order == ["sft", "dpo"] * 3
    order = interleave({"sft": 3.0, "dpo": 1.0, "retain": 0.0}, 8)
    assert order.count("sft") == 6 and order.count("dpo") == 2 and "retain" not in order
    assert math.isclose(order.index("dpo"), 1, abs_tol=1)  # dpo is spread, not bunched at the end


def test_order_is_written_only_when_not_the_default():
    """Schedules written before phases had an order load and save unchanged."""
    assert "order" not in Schedule.named("expert").to_yaml()
    assert Schedule.named("alright").to_dict()["phases"][0]["order"] == "random"
