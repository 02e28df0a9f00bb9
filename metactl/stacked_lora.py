"""K episodes' LoRA adapters stacked along a leading dimension on one shared base model.

Every adapted module keeps its base weight once and, per tool, ``A: [K, r, in]`` and
``B: [K, out, r]``. A forward pass carries row *blocks*, one per routed episode, all the same
size; block ``b`` is computed with episode ``route.index[b]``'s adapters at its own output
scales through two batched matmuls per tool:
``y = base(x) + sum_t s[b, t] * (x_b A_bt^T) B_bt^T``, the peft LoRA forward, K at a time.

Each tool's parameters of all K episodes live in one flat ``[K, P]`` tensor (the module weights
are views into it), so one batched AdamW step updates every episode's adapter of a tool with
per-episode, per-(layer group, module kind) learning rates, and episodes that do not step that
tool this step are left exactly as they are (masked, including AdamW's step counts).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from metactl.adapters import LoraSettings, init_order, lora_a_init, save_peft_adapters
from metactl.layer_grid import MODULE_KINDS, Grid
from metactl.layer_map import LayerMap, TargetModule

BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as the single-episode engine uses them
EPS = 1e-8


@dataclass
class Route:
    """Which episodes' adapters the row blocks of the next forward passes use."""

    index: torch.Tensor | None  # episode of each block (None: all K, in order)
    blocks: int
    tools: list[int]  # tools whose adapters are computed (the others add exactly nothing)
    scale: torch.Tensor  # [blocks, tools, kinds, groups]: alpha / r * output control


class StackedLoRALinear(nn.Module):
    """A frozen base ``nn.Linear`` plus every episode's LoRA update of it, per tool."""

    def __init__(self, base: nn.Linear, target: TargetModule, owner: StackedAdapters) -> None:
        super().__init__()
        self.base_layer = base
        self.target = target
        self.kind = MODULE_KINDS.index(target.kind)
        self.owner = [owner]  # a list: not registered as a submodule
        self.A: list[torch.Tensor] = []  # per tool, [K, r, in] views of the tool's flat storage
        self.B: list[torch.Tensor] = []  # per tool, [K, out, r]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        owner = self.owner[0]
        route = owner.route
        if route is None or not route.tools:
            return out
        if owner.capture is not None:
            owner.capture.append((self, x.detach(), out))
        xs = x.reshape(route.blocks, -1, x.shape[-1])
        tools = route.tools
        rank = self.A[tools[0]].shape[1]
        scale = route.scale[:, tools, self.kind, self.target.group].repeat_interleave(rank, dim=1)
        weights = [self.A[t] for t in tools] + [self.B[t] for t in tools]
        acc = StackedLoRAUpdate.apply(out.reshape(route.blocks, -1, out.shape[-1]), xs, scale, route.index, *weights)
        return acc.reshape(out.shape)


class StackedLoRAUpdate(torch.autograd.Function):
    """``out + (x (s A)^T) B^T`` per block for the routed tools' adapters side by side, forward and
    backward in the layouts CPU BLAS runs fast, gradients only for the weights that train.

    The tools' adapters are concatenated along the rank (``len(tools) * r`` in all): one pass over
    the activations serves every tool, and ``sum_t s_t B_t A_t x`` is unchanged. With rank 8, a
    batched matmul producing ``[rows, r]`` or ``[out, r]`` runs 3-5x slower than the same product
    computed transposed (``[r, rows]``, ``[r, out]``), so every product here is the transposed one;
    autograd's own backward of ``bmm`` would pick the slow ones. The scale multiplies ``A``
    (``[r, in]``), not the ``[rows, out]`` update peft scales: the same product at a fraction of the
    work. A step trains one tool; the others' adapters only shape the output, so their weight
    gradients (and the concatenation's split) are never computed.
    """

    @staticmethod
    def forward(ctx, out, x, s, index, *weights):
        # out [n, L, o], x [n, L, i], s [n, R]; weights: each tool's A [K, r, i], then each tool's B [K, o, r]
        half = len(weights) // 2
        ctx.index, ctx.half, ctx.full = index, half, weights[0].shape[0]
        if index is not None:
            weights = tuple(w[index] for w in weights)
        a = weights[0] if half == 1 else torch.cat(weights[:half], 1)
        b = weights[half] if half == 1 else torch.cat(weights[half:], 2)
        a_s = a * s[:, :, None]
        hs_t = torch.bmm(a_s, x.transpose(1, 2))  # [n, R, L]
        ctx.save_for_backward(x, a_s, b, s, hs_t)
        ctx.rank = a.shape[1] // half  # every tool's adapter has the same rank
        return torch.baddbmm(out, hs_t.transpose(1, 2), b.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, a_s, b, s, hs_t = ctx.saved_tensors
        need = ctx.needs_input_grad
        half, r, index = ctx.half, ctx.rank, ctx.index
        need_a, need_b = need[4 : 4 + half], need[4 + half :]
        g_h_t = grad_x = None
        if need[1] or any(need_a):
            g_h_t = torch.bmm(b.transpose(1, 2), grad.transpose(1, 2))  # [n, R, L]
        if need[1]:
            grad_x = torch.bmm(g_h_t.transpose(1, 2), a_s)
        out_w: list[torch.Tensor | None] = [None] * (2 * half)
        for j in range(half):
            rows = slice(j * r, (j + 1) * r)
            if need_a[j]:
                out_w[j] = torch.bmm(g_h_t[:, rows], x) * s[:, rows, None]
            if need_b[j]:
                out_w[half + j] = torch.bmm(hs_t[:, rows], grad).transpose(1, 2)
        if index is not None:
            out_w = [None if g is None else _spread(g, index, ctx.full) for g in out_w]
        return grad if need[0] else None, grad_x, None, None, *out_w


def _spread(g: torch.Tensor, index: torch.Tensor, episodes: int) -> torch.Tensor:
    """Gradients of the routed blocks placed at their episodes' rows; the other episodes' are zero."""
    return torch.zeros((episodes, *g.shape[1:]), dtype=g.dtype, device=g.device).index_copy_(0, index, g)


class StackedModel(nn.Module):
    """The base model with stacked adapters, called like the ``PeftModel`` it stands in for."""

    def __init__(self, inner: nn.Module, adapters: StackedAdapters) -> None:
        super().__init__()
        self.inner = inner
        self.stacked = [adapters]

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def get_base_model(self) -> nn.Module:
        return self.inner

    def get_input_embeddings(self) -> nn.Module:
        return self.inner.get_input_embeddings()

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """The frozen base alone (references, base scores), whatever route is set."""
        owner = self.stacked[0]
        route, owner.route = owner.route, None
        try:
            yield
        finally:
            owner.route = route


class StackedAdapters:
    """Every tool's adapter for K episodes on one model: init, route, scale, batched AdamW."""

    def __init__(
        self, model: nn.Module, tools: list[str], layer_map: LayerMap, lora: LoraSettings, size: int
    ) -> None:
        if layer_map.conv1d:
            raise NotImplementedError("the population engine adapts nn.Linear modules; GPT-2 Conv1D is not supported")
        self.tools = list(tools)
        self.layer_map = layer_map
        self.lora = lora
        self.size = size
        self.route: Route | None = None
        self.capture: list | None = None
        by_name = {m.name: m for m in layer_map.modules}
        self.layers: list[tuple[TargetModule, StackedLoRALinear]] = []
        for name, mod in list(model.named_modules()):
            if name in by_name:
                parent, _, leaf = name.rpartition(".")
                wrapped = StackedLoRALinear(mod, by_name[name], self)
                setattr(model.get_submodule(parent) if parent else model, leaf, wrapped)
                self.layers.append((by_name[name], wrapped))
        weight = self.layers[0][1].base_layer.weight
        device, dtype = weight.device, weight.dtype
        groups, kinds = layer_map.groups, len(MODULE_KINDS)
        # Flat storage per tool: module by module, A then B; seg[i] = kind * groups + group of element i.
        sizes = [(lora.r, m.base_layer.in_features, m.base_layer.out_features) for _, m in self.layers]
        total = sum(r * (i + o) for r, i, o in sizes)
        seg = torch.cat([
            torch.full((r * (i + o),), MODULE_KINDS.index(t.kind) * groups + t.group, dtype=torch.long)
            for (t, _), (r, i, o) in zip(self.layers, sizes)
        ]).to(device)
        self.seg = seg
        self.flat = [torch.zeros(size, total, device=device, dtype=dtype) for _ in self.tools]
        self.grad = [torch.zeros_like(f) for f in self.flat]
        self.exp_avg = [torch.zeros_like(f) for f in self.flat]
        self.exp_avg_sq = [torch.zeros_like(f) for f in self.flat]
        self.steps = [torch.zeros(size, kinds * groups, device=device, dtype=torch.float64) for _ in self.tools]
        for ti in range(len(self.tools)):
            off = 0
            for (_, mod), (r, i, o) in zip(self.layers, sizes):
                mod.A.append(self.flat[ti][:, off : off + r * i].view(size, r, i))
                mod.B.append(self.flat[ti][:, off + r * i : off + r * (i + o)].view(size, o, r))
                off += r * (i + o)
        self.scale = torch.full((size, len(self.tools), kinds, groups), lora.alpha / lora.r, device=device)
        self.model = StackedModel(model, self)

    # -- per episode --------------------------------------------------------------------------------
    @torch.no_grad()
    def reset(self, slot: int, seed: int) -> None:
        """Episode ``slot`` starts afresh: peft's init from ``seed`` (as :meth:`AdapterSet.reset`), zero
        optimiser state, every output scale 1."""
        order = init_order(self.tools, len(self.layers))
        shapes = [(self.layers[m][1].A[t].shape[1:], self.layers[m][1].A[t].dtype) for m, t in order]
        for (m, t), init in zip(order, lora_a_init(shapes, seed)):
            self.layers[m][1].A[t][slot].copy_(init)
        for _, mod in self.layers:
            for t in range(len(self.tools)):
                mod.B[t][slot].zero_()
        for state in (self.exp_avg, self.exp_avg_sq, self.steps):
            for s in state:
                s[slot].zero_()
        self.scale[slot] = self.lora.alpha / self.lora.r

    def set_output(self, slot: int, output: dict[str, Grid]) -> None:
        base = self.lora.alpha / self.lora.r
        for t, grid in output.items():
            self.scale[slot, self.tools.index(t)] = torch.tensor(grid, dtype=torch.float64) * base

    @torch.no_grad()
    def norms(self, slots: list[int]) -> list[dict[str, list[float]]]:
        """Per slot: Frobenius norm of each tool's effective update ``s * B A`` per layer group."""
        index = torch.tensor(slots, device=self.scale.device)
        sq = torch.zeros(len(slots), len(self.tools), self.layer_map.groups, dtype=torch.float64)
        for target, mod in self.layers:
            for t in range(len(self.tools)):
                delta = torch.bmm(mod.B[t][index], mod.A[t][index])
                delta = delta * self.scale[index, t, mod.kind, target.group, None, None]
                sq[:, t, target.group] += delta.pow(2).sum((1, 2)).double().cpu()
        return [
            {t: [math.sqrt(v) for v in sq[i, ti].tolist()] for ti, t in enumerate(self.tools)}
            for i in range(len(slots))
        ]

    def output_scales(self, slot: int) -> dict[str, Grid]:
        """Episode ``slot``'s output controls (as :meth:`AdapterSet.output_scales`)."""
        base = self.lora.alpha / self.lora.r
        return {t: (self.scale[slot, i] / base).tolist() for i, t in enumerate(self.tools)}

    def save(self, slot: int, out_dir: Path, base_name: str | None = None) -> dict[str, Path]:
        """Episode ``slot``'s adapters in peft format, as :meth:`AdapterSet.save` writes them."""
        states = {
            tool: {
                key: w[slot]
                for target, mod in self.layers
                for key, w in (
                    (f"base_model.model.{target.name}.lora_A.weight", mod.A[t]),
                    (f"base_model.model.{target.name}.lora_B.weight", mod.B[t]),
                )
            }
            for t, tool in enumerate(self.tools)
        }
        return save_peft_adapters(self.layer_map, self.lora, self.output_scales(slot), states, base_name, out_dir)

    # -- forward ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def routing(self, slots: list[int], tools: list[str]) -> Iterator[None]:
        """Row block ``b`` of every forward inside runs through episode ``slots[b]``'s adapters."""
        if list(slots) == list(range(self.size)):
            index = None
        else:
            index = torch.tensor(slots, device=self.scale.device)
        scale = self.scale if index is None else self.scale[index]
        previous = self.route
        self.route = Route(index, len(slots), sorted(self.tools.index(t) for t in tools), scale)
        try:
            yield
        finally:
            self.route = previous

    def trainable(self, tool: str, cells: set[tuple[int, int]]) -> None:
        """Gradients for ``tool``'s weights in the (kind, group) ``cells`` only (autograd then stops at
        the lowest trained layer by itself)."""
        t = self.tools.index(tool)
        for target, mod in self.layers:
            on = (mod.kind, target.group) in cells
            mod.A[t].requires_grad_(on)
            mod.B[t].requires_grad_(on)

    def take_grads(self, tool: str) -> None:
        """Move the module weights' gradients of ``tool`` into its flat gradient, and freeze them."""
        t = self.tools.index(tool)
        g = self.grad[t]
        off = 0
        for _, mod in self.layers:
            for w in (mod.A[t], mod.B[t]):
                n = w[0].numel()
                if w.grad is not None:
                    g[:, off : off + n] = w.grad.reshape(self.size, n)
                    w.grad = None
                else:
                    g[:, off : off + n] = 0.0
                w.requires_grad_(False)
                off += n

    @torch.no_grad()
    def adamw_step(self, tool: str, lr: torch.Tensor) -> None:
        """One AdamW step (``torch.optim.AdamW``, weight decay 0) of ``tool``'s adapters of every
        episode whose ``lr[k, kind * groups + group]`` is above zero; the others stay as they are."""
        t = self.tools.index(tool)
        b1, b2 = BETAS
        on = lr > 0
        self.steps[t] += on
        step = self.steps[t].clamp_min(1.0)
        dtype = self.flat[t].dtype
        step_size = (lr / (1 - b1**step)).to(dtype)  # in float64, as torch computes it for a Python lr
        bc2_sqrt = (1 - b2**step).sqrt().to(dtype)
        mask = on[:, self.seg]
        g, m, v, p = self.grad[t], self.exp_avg[t], self.exp_avg_sq[t], self.flat[t]
        m.copy_(torch.where(mask, m.lerp(g, 1 - b1), m))
        v.copy_(torch.where(mask, v * b2 + (1 - b2) * g * g, v))
        denom = v.sqrt() / bc2_sqrt[:, self.seg] + EPS
        p.sub_(torch.where(mask, m / denom * step_size[:, self.seg], 0.0))
