"""``dpo``: the sigmoid DPO loss against the frozen base (adapters disabled) as reference.

The reference never changes during a run, so its log-probs are computed once per model and
suite in :meth:`DPOTool.prepare` instead of once per step; the loss equals trl's ``DPOTrainer``
(``loss_type="sigmoid"``) on the same batch (``tests/test_dpo_parity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from metactl.adapters import base_only
from metactl.errors import check_number
from metactl.forward import EncodedPairs, chunked_completion_logprobs, encode_pairs, token_logprobs
from metactl.tools.base import Tool, ToolConfig


@dataclass
class DPOConfig(ToolConfig):
    lr: float = field(
        default=3e-4,
        metadata={"help": "base learning rate (strong enough to erode the style in 48 steps on proxy-tiny)"},
    )
    beta: float = field(
        default=0.1, metadata={"help": "DPO temperature: how far the policy may move from the reference"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.beta = check_number("tools.dpo.beta", self.beta, low=0.0, high=100.0, low_open=True)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Mean of ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` over the batch."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * logits).mean()


class DPOTool(Tool):
    name = "dpo"
    Config = DPOConfig
    fields = ("prompt", "chosen", "rejected")

    def __init__(self, config: DPOConfig, rows: list[dict], tokenizer) -> None:
        super().__init__(config, rows, tokenizer)
        prompts = [r["prompt"] for r in rows]
        # Chosen rows first, rejected rows after: one forward scores both halves of a batch.
        self.data = encode_pairs(
            tokenizer, prompts + prompts, [r["chosen"] for r in rows] + [r["rejected"] for r in rows], append_eos=True
        )
        self.ref: torch.Tensor | None = None

    @torch.no_grad()
    def prepare(self, peft_model) -> None:
        with base_only(peft_model):
            self.ref = chunked_completion_logprobs(peft_model, self.data)

    def batch(self, index: torch.Tensor) -> tuple[EncodedPairs, tuple[torch.Tensor, torch.Tensor]]:
        if self.ref is None:
            raise RuntimeError("DPOTool.prepare(model) must run before loss()")
        n = len(self.rows)
        return self.data.select(torch.cat([index, index + n])), (self.ref[index], self.ref[index + n])

    def loss_of(
        self, logits: torch.Tensor, batch: EncodedPairs, extra: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        lp = (token_logprobs(logits, batch.input_ids) * batch.loss_mask).sum(-1)
        k = len(lp) // 2
        return dpo_loss(lp[:k], lp[k:], *extra, self.config.beta)
