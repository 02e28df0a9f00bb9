import pytest

from metactl.config import load_config
from metactl.errors import ConfigError


def test_overrides_and_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("training: {total_steps: 40}\ntools: {dpo: {beta: 0.2}}\n")
    cfg = load_config(tmp_path / "c.yaml", ["training.seed=3", "reward.stability=0.25"])
    assert cfg.training.total_steps == 40 and cfg.training.seed == 3
    assert cfg.tools["dpo"].beta == 0.2 and cfg.tools["sft"].lr == 1e-3
    assert cfg.reward.stability == 0.25


@pytest.mark.parametrize(
    "override, needle",
    [
        ("training.total_step=5", "did you mean 'total_steps'"),
        ("training.total_steps=0", "training.total_steps: got 0"),
        ("training.layer_groups=0", "layer_groups: got 0"),
        ("tools.sfft.lr=0.1", "did you mean 'sft'"),
        ("tools.dpo.beta=-1", "tools.dpo.beta"),
        ("tools.sft.lr=.nan", "finite"),
        ("reward.combine=geo", "did you mean 'geometric'"),
        ("nonsense", "KEY=VALUE"),
    ],
)
def test_bad_config_values(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle.lower() in str(err.value).lower()


def test_reward_weights_all_zero_rejected():
    with pytest.raises(ConfigError, match="all zero"):
        load_config(None, ["reward.target=0", "reward.heldout=0", "reward.stability=0"])


def test_shipped_default_config_matches_the_code():
    from pathlib import Path

    from metactl.config import RunConfig

    shipped = Path(__file__).resolve().parents[1] / "configs" / "run" / "default.yaml"
    assert load_config(shipped) == RunConfig(), "regenerate with: metactl show-config > configs/run/default.yaml"


def test_commented_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["tools.dpo.beta=0.3", "reward.combine=mean"])
    (tmp_path / "c.yaml").write_text(cfg.to_commented_yaml())
    assert load_config(tmp_path / "c.yaml") == cfg


def test_composite_and_stability_on_hand_computed_numbers():
    """The reward's formulas, pinned: geometric combine (floored at 1e-3), stability = exp(-kl/kl_scale),
    composite = sum of weights x parts, and the composite a controller observes (observe split for both
    behaviour parts). (Made to fail once by writing stability as exp(-kl), as the README once said.)"""
    import math

    from metactl.scoring import RewardConfig, combine

    assert combine([0.25, 1.0], "geometric") == pytest.approx(0.5)
    assert combine([0.0, 1.0], "geometric") == pytest.approx(math.sqrt(1e-3))
    assert combine([0.25, 1.0], "mean") == pytest.approx(0.625)
    reward = RewardConfig(target=1.0, heldout=2.0, stability=0.5, kl_scale=0.1)
    assert reward.stability_of(0.05) == pytest.approx(0.6065306597)
    assert reward.stability_of(0.0) == 1.0
    parts = {"target": 0.5, "heldout": 0.25, "stability": 0.6065306597}
    assert reward.composite(parts) == pytest.approx(0.5 + 0.5 + 0.30326532985)
    assert reward.observed_composite(0.4, 0.6065306597) == pytest.approx(3.0 * 0.4 + 0.30326532985)
