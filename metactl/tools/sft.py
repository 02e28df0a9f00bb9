"""``sft``: completion-only cross-entropy on prompt/completion rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from metactl.forward import EncodedPairs, encode_pairs, token_logprobs
from metactl.tools.base import Tool, ToolConfig


@dataclass
class SFTConfig(ToolConfig):
    lr: float = field(default=1e-3, metadata={"help": "base learning rate; a phase's train control multiplies it"})


class SFTTool(Tool):
    name = "sft"
    Config = SFTConfig
    fields = ("prompt", "completion")

    def __init__(self, config: SFTConfig, rows: list[dict], tokenizer) -> None:
        super().__init__(config, rows, tokenizer)
        self.data = encode_pairs(
            tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows], append_eos=True
        )

    def units(self, index: torch.Tensor) -> float:
        return float(self.data.loss_mask[index].sum())  # the loss is a mean over completion tokens

    def batch(self, index: torch.Tensor) -> tuple[EncodedPairs, None]:
        return self.data.select(index), None

    def loss_of(self, logits: torch.Tensor, batch: EncodedPairs, extra: None) -> torch.Tensor:
        lp = token_logprobs(logits, batch.input_ids)
        return -(lp * batch.loss_mask).sum() / batch.loss_mask.sum()
