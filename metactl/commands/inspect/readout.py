"""Is a behaviour represented inside the model, or only produced at its output?

For every decoder layer the hidden states are read out through the model's own final norm and
unembedding (a fixed linear probe, the "logit lens"), and each behaviour probe is scored on
that readout exactly as the scorer scores the output: does the chosen completion get more
probability than the rejected one? At the last layer this is the behaviour score itself. A
behaviour the adaptation implanted in the representations becomes readable several layers
before the output; one that is only imitated at the output appears at the last layer alone.

Why a fixed readout and not a probe trained on chosen-vs-rejected hidden states: the two
completions differ in their tokens, so a trained probe separates them on the base model already
(at every layer) and cannot tell whether the model prefers either.
"""

from __future__ import annotations

import torch
from torch import nn

from metactl.errors import ConfigError
from metactl.forward import encode_pairs, token_logprobs
from metactl.layer_map import decoder_layers
from metactl.tasks.suite import SPLITS, TaskSuite


def final_norm(model: nn.Module) -> nn.Module:
    """The norm between the decoder stack and the unembedding (Llama ``model.norm``, GPT-2 ``transformer.ln_f``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path, _ = decoder_layers(base)
    parent = base.get_submodule(path.rsplit(".", 1)[0]) if "." in path else base
    norms = [m for _, m in parent.named_children() if "norm" in type(m).__name__.lower()]
    if not norms:
        raise ConfigError(f"{type(base).__name__}: no final norm beside {path}; the per-layer readout needs one.")
    return norms[-1]


MIN_GAIN = 0.1  # below this gain over the base at the output, a behaviour counts as not gained


def share_below_output(accs: list[float], base: list[float]) -> float | None:
    """Share of a behaviour's gain over the base at the output (``accs[-1] - base[-1]``) already
    readable one layer down: 1 formed inside the model, 0 only at the output; None when the output
    gained at most :data:`MIN_GAIN` (0.0 for a one-layer model)."""
    gain = accs[-1] - base[-1]
    if gain <= MIN_GAIN:
        return None
    return (accs[-2] - base[-2]) / gain if len(accs) > 1 else 0.0


@torch.no_grad()
def layer_readout(model: nn.Module, tokenizer, suite: TaskSuite, chunk: int = 128) -> dict[str, list[float]]:
    """``{"target/style": [accuracy at layer 1, ..., layer L], ...}`` for every split and behaviour."""
    norm = final_norm(model)
    head = model.get_output_embeddings()
    prompts, completions = [], []
    # sides[key][item] = (chosen variant rows, rejected variant rows)
    sides: dict[str, list[tuple[list[int], list[int]]]] = {}
    for split in SPLITS:
        for b in suite.behaviours:
            rows = sides.setdefault(f"{split}/{b.name}", [])
            for item in suite.evals[split][b.name]:
                pair: tuple[list[int], list[int]] = ([], [])
                for side, texts in enumerate((item.chosen, item.rejected)):
                    for text in texts:
                        pair[side].append(len(prompts))
                        prompts.append(item.prompt)
                        completions.append(text)
                rows.append(pair)
    enc = encode_pairs(tokenizer, prompts, completions)
    per_layer: list[torch.Tensor] = []
    for start in range(0, len(enc), chunk):
        batch = enc.select(torch.arange(start, min(start + chunk, len(enc))))
        hidden = model(input_ids=batch.input_ids, output_hidden_states=True).hidden_states[1:]
        rows = []
        for layer, h in enumerate(hidden):
            # The model's last hidden state already went through the final norm.
            h = h if layer == len(hidden) - 1 else norm(h)
            rows.append((token_logprobs(head(h), batch.input_ids) * batch.loss_mask).sum(-1))
        per_layer.append(torch.stack(rows))
    logp = torch.cat(per_layer, dim=1)  # [layers, variants]
    out: dict[str, list[float]] = {}
    for key, pairs in sides.items():
        wins = torch.stack(
            [torch.logsumexp(logp[:, c], 1) > torch.logsumexp(logp[:, r], 1) for c, r in pairs]
        )  # [items, layers]
        out[key] = wins.float().mean(0).tolist()
    return out
