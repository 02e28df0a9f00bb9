"""``retain``: KL(base || model) on general text, trained into its own adapter.

The retain adapter learns to cancel what the other adapters change on the retain distribution,
so its influence (and the stability it buys) is measurable and removable like any tool's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metactl.adapters import base_only
from metactl.forward import EncodedPairs, encode_texts, forward_logits, token_kl
from metactl.tools.base import Tool, ToolConfig

# Above this many cached floats (rows x tokens x vocab) the base's log-probs are recomputed per
# step instead (a 49k-token vocabulary would need gigabytes).
_CACHE_LIMIT = 64_000_000


@dataclass
class RetainConfig(ToolConfig):
    lr: float = field(default=1e-3, metadata={"help": "base learning rate; a phase's train control multiplies it"})


class RetainTool(Tool):
    name = "retain"
    Config = RetainConfig
    fields = ("text",)

    def __init__(self, config: RetainConfig, rows: list[dict], tokenizer) -> None:
        super().__init__(config, rows, tokenizer)
        self.data = encode_texts(tokenizer, [r["text"] for r in rows])
        self.base_logp: torch.Tensor | None = None
        self._peft_model = None

    @torch.no_grad()
    def prepare(self, peft_model) -> None:
        self._peft_model = peft_model
        ids = self.data.input_ids
        vocab = peft_model.get_input_embeddings().weight.shape[0]
        if ids.numel() * vocab <= _CACHE_LIMIT:
            with base_only(peft_model):
                logits = forward_logits(peft_model, self.data)
            self.base_logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)

    def units(self, index: torch.Tensor) -> float:
        return float(self.data.loss_mask[index].sum())  # the KL is a mean over scored positions

    def batch(self, index: torch.Tensor) -> tuple[EncodedPairs, torch.Tensor]:
        batch = self.data.select(index)
        width = batch.input_ids.shape[1] - 1
        if self.base_logp is not None:
            return batch, self.base_logp[index, :width]
        with torch.no_grad(), base_only(self._peft_model):
            return batch, torch.log_softmax(forward_logits(self._peft_model, batch)[:, :-1].float(), dim=-1)

    def loss_of(self, logits: torch.Tensor, batch: EncodedPairs, extra: torch.Tensor) -> torch.Tensor:
        return token_kl(extra, logits[:, :-1], batch.loss_mask)
