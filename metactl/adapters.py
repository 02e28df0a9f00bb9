"""One peft LoRA adapter per tool on a shared model, with per-group, per-kind influence controls.

The final model is ``base + sum_t sum_m s[t, m] * B_t,m A_t,m``: each tool owns a named adapter,
``s`` is peft's per-module ``scaling`` (the *output* control) and the learning rate of each
(tool, layer group, module kind) parameter group is the *train* control. Which modules those are
(layer group, module kind) comes from :mod:`metactl.layer_map`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from metactl.layer_grid import MODULE_KINDS, Grid
from metactl.layer_map import LayerMap, TargetModule


@contextlib.contextmanager
def base_only(peft_model: nn.Module) -> Iterator[nn.Module]:
    """``peft_model`` with every adapter off (the frozen base: references, base scores), leaving
    ``requires_grad`` exactly as it was.

    peft's ``disable_adapter()`` re-enables adapters on exit through ``set_adapter``, which marks
    every *active* adapter trainable; a reference pass inside a training step would then train
    all of them (and, under DDP, sync none of them as intended).
    """
    flags = [(p, p.requires_grad) for p in peft_model.parameters()]
    try:
        with peft_model.disable_adapter():
            yield peft_model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def lora_a_init(shapes: list[tuple[torch.Size, torch.dtype]], seed: int) -> list[torch.Tensor]:
    """peft's kaiming-uniform init of every LoRA ``A`` in order (module by module, tool by tool).

    Drawn on the CPU from one generator: the same seed gives the same adapters on any device, and
    in the single-episode and the population engine alike.
    """
    gen = torch.Generator().manual_seed(seed)
    return [
        nn.init.kaiming_uniform_(torch.empty(shape, dtype=dtype), a=math.sqrt(5), generator=gen)
        for shape, dtype in shapes
    ]


def init_order(tools: list[str], modules: int) -> list[tuple[int, int]]:
    """(module index, tool index) in the order the ``A`` inits are drawn: the default tools module by
    module first, then any opt-in tool (``grpo``) the same way. Adding an opt-in tool to a run thus
    leaves every other tool's init as it was, so a schedule that does not use it trains exactly as
    in a run without it (and a run with only default tools draws as it always has)."""
    from metactl.tools import DEFAULT_TOOLS

    first = [i for i, t in enumerate(tools) if t in DEFAULT_TOOLS]
    rest = [i for i, t in enumerate(tools) if t not in DEFAULT_TOOLS]
    return [(m, i) for block in (first, rest) for m in range(modules) for i in block]


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: float = 16.0


class AdapterSet:
    """The tools' adapters on one ``PeftModel``: create, reset, scale, and group parameters."""

    def __init__(self, base_model: nn.Module, tools: list[str], layer_map: LayerMap, lora: LoraSettings,
                 model_path: str | None = None):
        from peft import get_peft_model

        self.model_path = model_path  # where the base was loaded from: what a merged base is saved from
        self.tools = list(tools)
        self.layer_map = layer_map
        self.lora = lora
        self.config = lora_config(layer_map, lora)
        self.model = get_peft_model(base_model, self.config, adapter_name=self.tools[0])
        for t in self.tools[1:]:
            self.model.add_adapter(t, self.config)
        self.model.base_model.set_adapter(self.tools)  # every tool contributes to every forward
        by_name = {m.name: m for m in layer_map.modules}
        # Every adapted module beside the target it adapts (layer group, kind): what controls and
        # the interference reading address.
        self.layers: list[tuple[TargetModule, nn.Module]] = []
        prefix = "base_model.model."
        for name, mod in self.model.named_modules():
            if hasattr(mod, "lora_A") and name.startswith(prefix) and name[len(prefix):] in by_name:
                self.layers.append((by_name[name[len(prefix):]], mod))
        self.params: dict[tuple[str, int, str], list[nn.Parameter]] = {
            (t, g, k): [] for t in self.tools for g in range(layer_map.groups) for k in MODULE_KINDS
        }
        for target, mod in self.layers:
            for t in self.tools:
                self.params[(t, target.group, target.kind)] += [mod.lora_A[t].weight, mod.lora_B[t].weight]
        # The adapted base weights as loaded, kept while a merge has changed them (restore()), and each
        # merged tool's share of the change (module by module), so attributions can switch it off.
        self._initial: list[torch.Tensor] | None = None
        self._parts: dict[str, list[torch.Tensor]] = {}
        self.freeze()

    # -- state ------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, seed: int) -> None:
        """Re-initialise every adapter as peft does (kaiming A, zero B) from ``seed``."""
        self._init(self.tools, seed)
        self.set_output({t: [[1.0] * self.layer_map.groups for _ in MODULE_KINDS] for t in self.tools})

    # -- merges --------------------------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        """Has a merge changed the base weights since the last :meth:`restore`?"""
        return self._initial is not None

    @torch.no_grad()
    def merge(self, tools: list[str], coefficient: float, toward_init: float, seed: int) -> None:
        """Fold ``tools``' adapters into the base weights, then restart those adapters.

        Each adapted weight becomes ``W + coefficient * sum_t s_t B_t A_t`` (peft's own
        ``get_delta_weight``, output scale included), then ``W - toward_init * (W - W_initial)``
        (WARP's interpolation towards the initialisation). The merged tools' adapters restart as
        peft initialises them (kaiming ``A`` from ``seed``, zero ``B``), so the model's function is
        unchanged by a merge at coefficient 1 and toward_init 0.
        """
        self._keep_initial()
        for t in tools:
            self._parts.setdefault(t, [torch.zeros_like(w0) for w0 in self._initial])
        for i, ((_, mod), w0) in enumerate(zip(self.layers, self._initial)):
            w = mod.base_layer.weight
            for t in tools:
                delta = mod.get_delta_weight(t).to(w.dtype)
                w.add_(delta, alpha=coefficient)
                self._parts[t][i].add_(delta, alpha=coefficient)
            if toward_init:
                w.sub_(w - w0, alpha=toward_init)
                for parts in self._parts.values():  # W - W0 is the sum of the parts: each shrinks alike
                    parts[i].mul_(1.0 - toward_init)
        self._init(list(tools), seed)

    @torch.no_grad()
    def _init(self, tools: list[str], seed: int) -> None:
        """peft's init of ``tools``' adapters from ``seed``: kaiming ``A`` (drawn in :func:`init_order`), zero ``B``."""
        weights = [self.layers[m][1].lora_A[tools[i]].weight for m, i in init_order(tools, len(self.layers))]
        for w, init in zip(weights, lora_a_init([(w.shape, w.dtype) for w in weights], seed)):
            w.copy_(init)
        for _, mod in self.layers:
            for t in tools:
                nn.init.zeros_(mod.lora_B[t].weight)

    @torch.no_grad()
    def restore(self) -> bool:
        """Put the initial base weights back (an episode starts from the model as loaded); whether a
        merge had changed them."""
        if self._initial is None:
            return False
        self._put_base(self._initial)
        self._initial = None
        self._parts = {}
        return True

    def initial_weights(self) -> contextlib.AbstractContextManager:
        """The initial base weights in place for the duration (what the reported scores compare
        with), the merged ones back after: no merged part kept."""
        return self.merged_only(lambda tool, group: False)

    @contextlib.contextmanager
    def merged_only(self, keep: Callable[[str, int], bool]) -> Iterator[None]:
        """For the duration, the base holds only the merged parts ``keep(tool, layer_group)`` accepts
        (the initial weights plus those tools' folded-in deltas, in those groups): how an attribution
        switches a tool off when part of it was merged into the base."""
        if self._initial is None:
            yield
            return
        merged = self._base_copy()
        try:
            with torch.no_grad():
                for i, ((target, mod), w0) in enumerate(zip(self.layers, self._initial)):
                    w = mod.base_layer.weight
                    w.copy_(w0)
                    for t, parts in self._parts.items():
                        if keep(t, target.group):
                            w.add_(parts[i])
            yield
        finally:
            self._put_base(merged)

    def _keep_initial(self) -> None:
        """Set the initial base weights aside before the first change of a merge (what restore puts back)."""
        if self._initial is None:
            self._initial = self._base_copy()

    def _base_copy(self) -> list[torch.Tensor]:
        return [mod.base_layer.weight.detach().clone() for _, mod in self.layers]

    @torch.no_grad()
    def _put_base(self, weights: list[torch.Tensor]) -> None:
        for (_, mod), w in zip(self.layers, weights):
            mod.base_layer.weight.copy_(w)

    def merge_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """What a checkpoint keeps of the merges: the base weights now, and each tool's merged part."""
        names = [target.name for target, _ in self.layers]
        return {
            "base": self.base_weights(),
            **{f"part/{t}": {n: p.clone() for n, p in zip(names, parts)} for t, parts in self._parts.items()},
        }

    @torch.no_grad()
    def load_merge_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        """:meth:`merge_state` back in place, the initial weights kept aside."""
        names = [target.name for target, _ in self.layers]
        self._keep_initial()
        self._put_base([state["base"][n] for n in names])
        device = self.layers[0][1].base_layer.weight.device  # a checkpoint is read onto the CPU
        self._parts = {key[len("part/"):]: [parts[n].to(device).clone() for n in names]
                       for key, parts in state.items() if key.startswith("part/")}

    def base_weights(self) -> dict[str, torch.Tensor]:
        """The adapted modules' base weights as they are now, by module name (merged ones included)."""
        return {target.name: mod.base_layer.weight.detach().clone() for target, mod in self.layers}

    def set_output(self, output: dict[str, Grid]) -> None:
        base = self.lora.alpha / self.lora.r
        kinds = {k: i for i, k in enumerate(MODULE_KINDS)}
        for target, mod in self.layers:
            for t, grid in output.items():
                mod.scaling[t] = base * grid[kinds[target.kind]][target.group]

    def output_scales(self) -> dict[str, Grid]:
        base = self.lora.alpha / self.lora.r
        out = {t: [[0.0] * self.layer_map.groups for _ in MODULE_KINDS] for t in self.tools}
        kinds = {k: i for i, k in enumerate(MODULE_KINDS)}
        for target, mod in self.layers:
            for t in self.tools:
                out[t][kinds[target.kind]][target.group] = mod.scaling[t] / base
        return out

    def trainable(self, tool: str, train: Grid) -> None:
        """Only ``tool``'s adapter in groups with train > 0 gets gradients.

        Autograd then stops at the lowest trained layer by itself: nothing below it needs a
        gradient, which is the "skip backprop below the lowest trained layer" speed lever.
        """
        for (t, g, k), params in self.params.items():
            on = t == tool and train[MODULE_KINDS.index(k)][g] > 0
            for p in params:
                p.requires_grad_(on)

    def params_of(self, tool: str) -> list[nn.Parameter]:
        """Every parameter of ``tool``'s adapter, in a fixed order."""
        return [p for (t, _, _), params in self.params.items() if t == tool for p in params]

    def activate(self, tools: list[str]) -> None:
        """Compute only ``tools`` in the forward pass (others are skipped by peft entirely).

        peft's ``set_adapter`` marks the activated adapters trainable; the caller sets
        ``requires_grad`` afterwards (:meth:`trainable`), so this only changes what is computed.
        """
        self.model.base_model.set_adapter(tools)
        self.freeze()

    def freeze(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def norms(self) -> dict[str, list[float]]:
        """Frobenius norm of each tool's effective update ``s * B A`` per layer group."""
        sq = {t: [0.0] * self.layer_map.groups for t in self.tools}
        for target, mod in self.layers:
            for t in self.tools:
                delta = mod.scaling[t] * (mod.lora_B[t].weight @ mod.lora_A[t].weight)
                sq[t][target.group] += float(delta.pow(2).sum())
        return {t: [math.sqrt(v) for v in vals] for t, vals in sq.items()}

    def save(self, out_dir: Path) -> dict[str, Path]:
        """Save each tool's adapter in peft format, the final output scales baked into ``alpha_pattern``.

        ``PeftModel.from_pretrained(base, out_dir / tool)`` then reproduces this model exactly, where
        ``base`` is the model as loaded or, after a merge, the merged base the same call writes to
        ``out_dir / MERGED_BASE`` (:func:`save_merged_base`).
        """
        from peft import get_peft_model_state_dict

        states = {t: get_peft_model_state_dict(self.model, adapter_name=t) for t in self.tools}
        base_name = getattr(self.model.base_model.model.config, "_name_or_path", None)
        if self.merged:  # not the model as loaded: a loader that trusted it would silently get the wrong base
            base_name = f"{MERGED_BASE} (the folder beside this adapter's: load it as the base, docs/merge.md)"
        paths = save_peft_adapters(self.layer_map, self.lora, self.output_scales(), states, base_name, out_dir)
        if self.merged:
            if self.model_path is None:
                raise RuntimeError("a merged AdapterSet needs model_path to save its base")
            save_merged_base(self, self.model_path, Path(out_dir) / MERGED_BASE)
        return paths


MERGED_BASE = "merged_base"  # beside the tools' adapters, when a schedule merged: the base they sit on


def save_merged_base(adapters: AdapterSet, model_path: str, out_dir: Path) -> Path:
    """The base model with the merges folded in, as a plain transformers folder (``save_pretrained``
    and the tokenizer): ``AutoModelForCausalLM.from_pretrained(out_dir)`` plus the saved adapters is
    the trained model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = adapters.layers[0][1].base_layer.weight
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=first.dtype)
    with torch.no_grad():
        for name, weight in adapters.base_weights().items():
            model.get_submodule(name).weight.copy_(weight.to("cpu"))
    model.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(model_path).save_pretrained(str(out_dir))
    return Path(out_dir)


def lora_config(layer_map: LayerMap, lora: LoraSettings):
    """The peft ``LoraConfig`` every tool's adapter uses."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=0.0,
        target_modules=[m.name for m in layer_map.modules],
        fan_in_fan_out=layer_map.conv1d,
        bias="none",
    )


def save_peft_adapters(
    layer_map: LayerMap,
    lora: LoraSettings,
    scales: dict[str, Grid],
    states: dict[str, dict[str, torch.Tensor]],
    base_name: str | None,
    out_dir: Path,
) -> dict[str, Path]:
    """Write each tool's adapter (``states[tool]``: peft state-dict keys, adapter name removed) in
    peft format, its output scales baked into ``alpha_pattern``; the folder of each tool."""
    from safetensors.torch import save_file

    kinds = {k: i for i, k in enumerate(MODULE_KINDS)}
    paths = {}
    for t, state in states.items():
        cfg = lora_config(layer_map, lora)
        cfg.alpha_pattern = {
            re.escape(m.name): lora.alpha * scales[t][kinds[m.kind]][m.group] for m in layer_map.modules
        }
        cfg.base_model_name_or_path = base_name
        d = Path(out_dir) / t
        d.mkdir(parents=True, exist_ok=True)
        cfg.save_pretrained(str(d))
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(d / "adapter_model.safetensors"))
        paths[t] = d
    return paths
