"""Where do the tools pull against each other? Gradient cosines on the shared base weights.

Each tool trains its own adapter, so their parameters never overlap; what they share is the
base model their updates are added to. The gradient of a tool's loss with respect to a frozen
base weight is the direction that tool wants that layer to move, whichever adapter carries it.
The cosine between two tools' gradients over one layer group's weights is therefore a direct
reading of interference there: near -1 the tools undo each other, near +1 they agree, near 0
they are independent. It costs one backward pass per tool on a small fixed batch and touches
no optimiser or random state, so it does not change the episode it observes.
"""

from __future__ import annotations

import itertools

import torch

from metactl.runner import Engine

# A tool whose gradient is below this fraction of the largest tool's (in the same layer group) is
# not pulling anywhere: retain's loss is KL(base || base) before any training, so its gradient is
# rounding noise (~1e-8 of SFT's), and a cosine with noise is noise that differs between two
# numerically equivalent paths (batched vs alone). Real readings after training sit at 0.1-1.
NOISE_FLOOR = 1e-4


def pair_names(tools: list[str]) -> list[str]:
    return [f"{a}|{b}" for a, b in itertools.combinations(tools, 2)]


def pair_cosines(
    grads: dict[str, list[torch.Tensor]], norms: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Per tool pair ``"a|b"`` (in ``grads``' order), per layer group: the cosine of the two flat
    gradients, or exactly 0 where either is below :data:`NOISE_FLOOR` of the group's largest.
    ``norms``: the gradients' norms, if the caller has them already."""
    tools = list(grads)
    groups = len(grads[tools[0]]) if tools else 0
    norms = norms or _norms(grads)
    top = [max(norms[t][i] for t in tools) for i in range(groups)]
    out = {}
    for a, b in itertools.combinations(tools, 2):
        out[f"{a}|{b}"] = [
            0.0
            if min(norms[a][i], norms[b][i]) <= NOISE_FLOOR * top[i]
            else float(torch.dot(grads[a][i], grads[b][i]) / (norms[a][i] * norms[b][i]))
            for i in range(groups)
        ]
    return out


def _norms(grads: dict[str, list[torch.Tensor]]) -> dict[str, list[float]]:
    return {t: [float(g.norm()) for g in gs] for t, gs in grads.items()}


def reading_of(losses: dict[str, float], grads: dict[str, list[torch.Tensor]]) -> dict[str, list[float]]:
    """The whole interference reading from each tool's loss and per-group base-weight gradient:
    the pair cosines, ``loss/<tool>`` and ``gnorm/<tool>`` (each norm computed once for both)."""
    norms = _norms(grads)
    out = pair_cosines(grads, norms)
    for name, loss in losses.items():
        out[f"loss/{name}"] = [loss]
        out[f"gnorm/{name}"] = norms[name]
    return out


def gradient_cosines(engine: Engine, rows: int = 8) -> dict[str, list[float]]:
    """Per tool pair ``"a|b"``, per layer group: cosine of the tools' base-weight gradients; and per
    tool, from the same backward, ``"loss/<tool>"`` (its loss on the fixed rows, one value) and
    ``"gnorm/<tool>"`` (the norm of its base-weight gradient per layer group): readings any suite
    gives, which a controller compares with their values at the start of the episode."""
    adapters = engine.adapters
    groups = adapters.layer_map.groups
    weights: list[list[torch.nn.Parameter]] = [[] for _ in range(groups)]
    for target, mod in adapters.layers:
        weights[target.group].append(mod.get_base_layer().weight)
    flat = [w for ws in weights for w in ws]
    adapters.activate(engine.tool_names)
    grads: dict[str, list[torch.Tensor]] = {}
    losses: dict[str, float] = {}
    try:
        for w in flat:
            w.requires_grad_(True)
        for name in engine.tool_names:
            tool = engine.task.tools[name]
            index = torch.arange(min(rows, len(tool)))
            loss = tool.loss(engine.model, index)
            losses[name] = float(loss.detach())
            g = torch.autograd.grad(loss, flat, allow_unused=True)
            by_group, i = [], 0
            for ws in weights:
                parts = [
                    (gi if gi is not None else torch.zeros_like(w)).reshape(-1) for gi, w in zip(g[i : i + len(ws)], ws)
                ]
                by_group.append(torch.cat(parts) if parts else torch.zeros(1, device=flat[0].device))
                i += len(ws)
            grads[name] = by_group
    finally:
        adapters.freeze()
    return reading_of(losses, grads)


def is_cosine(key: str) -> bool:
    """Whether a key of the interference reading is a tool pair's cosine (not a loss or a norm)."""
    return "|" in key
