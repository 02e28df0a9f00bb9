"""Where each adapted module sits: its relative layer group and its module kind, for any decoder.

Layers are grouped by relative depth, ``group = floor(layer * G / L)``, and module kinds are
resolved from module paths (``self_attn``/``attn`` -> attn, ``mlp``/``feed_forward`` -> mlp), so
Llama, GPT-2 and most HF decoders map without a per-family list. :func:`preflight_layer_map`
does it on the meta device, from ``config.json`` alone, before any weights load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metactl.errors import ConfigError
from metactl.layer_grid import MODULE_KINDS

_ATTN = {"attn", "attention", "self_attn", "self_attention", "selfattention"}
_MLP = {"mlp", "feed_forward", "ffn", "feedforward", "block_sparse_moe"}


@dataclass(frozen=True)
class TargetModule:
    name: str  # path inside the base model, e.g. "model.layers.2.self_attn.q_proj"
    layer: int
    group: int
    kind: str  # "attn" | "mlp"


@dataclass
class LayerMap:
    """Where the adaptable modules of a model sit, in schedule terms."""

    architecture: str
    n_layers: int
    groups: int
    modules: list[TargetModule]
    conv1d: bool  # GPT-2 style Conv1D weights need peft's fan_in_fan_out

    def layers_of_group(self, group: int) -> list[int]:
        return [i for i in range(self.n_layers) if group_of(i, self.n_layers, self.groups) == group]

    def kind_names(self, kind: str) -> list[str]:
        """The module names (last path part) resolved to ``kind``, e.g. ``['c_attn', 'c_proj']``."""
        return sorted({m.name.rsplit(".", 1)[-1] for m in self.modules if m.kind == kind})

    def describe(self) -> str:
        """One line a user can check: which layers each depth group covers, which modules each kind."""
        def span(layers: list[int]) -> str:
            return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"

        groups = ", ".join(f"group {g}: {span(self.layers_of_group(g))}" for g in range(self.groups))
        kinds = "; ".join(f"{k}: {', '.join(self.kind_names(k))}" for k in MODULE_KINDS)
        return f"{self.architecture}, {self.n_layers} layers -> {groups}; {kinds}"


def group_of(layer: int, n_layers: int, groups: int) -> int:
    return layer * groups // n_layers


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's decoder blocks: (their module path, the ``nn.ModuleList`` holding them)."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matching = [(name, m) for name, m in candidates if n is None or len(m) == n]
    if not matching:
        raise ConfigError(
            f"model {type(model).__name__}: found no list of {n} decoder layers to group by depth; "
            "metactl needs a model whose blocks sit in one nn.ModuleList (as in HF decoders)."
        )
    return max(matching, key=lambda nm: len(nm[1]))


def _kind(path: str) -> str | None:
    parts = {p.lower() for p in path.split(".")}
    if parts & _ATTN:
        return "attn"
    if parts & _MLP:
        return "mlp"
    return None


def resolve_layer_map(model: nn.Module, groups: int) -> LayerMap:
    """Find every Linear/Conv1D inside the decoder blocks and label it with its group and kind."""
    from transformers.pytorch_utils import Conv1D

    if groups < 1:
        raise ConfigError(f"layer_groups: got {groups}; it must be >= 1.")
    prefix, layers = decoder_layers(model)
    n = len(layers)
    if n < groups:
        raise ConfigError(
            f"model has {n} decoder layers, too few for layer_groups={groups}; every group needs at least "
            f"one layer. Use layer_groups <= {n}."
        )
    modules, conv1d = [], False
    for i, block in enumerate(layers):
        for sub, mod in block.named_modules():
            if not isinstance(mod, (nn.Linear, Conv1D)) or not sub:
                continue
            kind = _kind(sub)
            if kind is None:
                continue
            conv1d |= isinstance(mod, Conv1D)
            modules.append(TargetModule(f"{prefix}.{i}.{sub}", i, group_of(i, n, groups), kind))
    kinds = {m.kind for m in modules}
    if kinds != set(MODULE_KINDS):
        arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ConfigError(
            f"model architecture {arch!r}: could not find both attention and MLP linear layers inside its "
            f"decoder blocks (found kinds: {sorted(kinds) or 'none'}). Module paths must contain one of "
            f"{sorted(_ATTN)} or {sorted(_MLP)}."
        )
    arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    return LayerMap(arch, n, groups, modules, conv1d)


def preflight_layer_map(model: str, groups: int) -> LayerMap | None:
    """Resolve ``model``'s layer map from its ``config.json`` alone, before any weights load.

    The architecture is instantiated on the meta device (no memory, no weights), so a model whose
    layers cannot be grouped or whose modules have no attn/mlp kind fails here with the reason.
    Returns None when the config is not on disk yet (a built-in model built on first use).
    """
    import json

    from transformers import AutoConfig, AutoModelForCausalLM

    from metactl.models import local_config, resolve_model

    path = local_config(resolve_model(model))
    if path is None:
        return None
    try:
        config = AutoConfig.from_pretrained(str(path.parent))
    except (OSError, ValueError, KeyError) as exc:
        kind = json.loads(path.read_text()).get("model_type", "?") if path.is_file() else "?"
        raise ConfigError(
            f"model {model!r}: its config.json (model_type {kind!r}) cannot be read by transformers: {exc}"
        ) from exc
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise ConfigError(
            f"model {model!r}: architecture {config.model_type!r} is not a causal LM transformers can build "
            f"({exc}); metactl adapts decoder-only models (Llama, GPT-2, Qwen, ...)."
        ) from exc
    return resolve_layer_map(skeleton, groups)
