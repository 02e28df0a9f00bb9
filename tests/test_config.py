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
