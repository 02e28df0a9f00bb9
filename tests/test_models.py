import dataclasses

import pytest

from metactl import models
from metactl.errors import ConfigError
from metactl.models.proxy import PROXY_SPECS


def test_proxy_is_built_on_first_use_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("METACTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "ASSETS", tmp_path / "no-assets")
    spec = dataclasses.replace(
        PROXY_SPECS["proxy-large"], layers=2, hidden=32, intermediate=64, heads=2, steps=3, batch=4
    )
    monkeypatch.setitem(PROXY_SPECS, "proxy-large", spec)
    ref = models.resolve_model("proxy-large")
    assert "first use" in ref.status()
    path = models.model_path(ref, progress=False)
    assert (tmp_path / "cache" / "models" / "proxy-large" / "model.safetensors").is_file()
    assert "ready" in ref.status()
    mtime = (tmp_path / "cache" / "models" / "proxy-large" / "model.safetensors").stat().st_mtime
    assert models.model_path(ref, progress=False) == path  # cached: not rebuilt
    assert (tmp_path / "cache" / "models" / "proxy-large" / "model.safetensors").stat().st_mtime == mtime
    model, tok, _ = models.load_model("proxy-large", progress=False)
    assert model.config.num_hidden_layers == 2 and tok("ab")["input_ids"][0] == tok.bos_token_id


@pytest.mark.parametrize(
    "name, needle",
    [("proxy-tny", "Did you mean 'proxy-tiny'"), ("./nope", "does not exist"), ("/abs/nope", "does not exist")],
)
def test_bad_model_names(name, needle):
    with pytest.raises(ConfigError, match=needle):
        models.resolve_model(name)


def test_hub_ids_are_accepted_without_loading():
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
