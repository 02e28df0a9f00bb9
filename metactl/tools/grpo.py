"""``grpo``: online RL on the tool's own samples (Group Relative Policy Optimization).

Each step draws ``batch_size`` prompts (TRL's prompt-only rows) and samples ``group_size``
completions for each from the model as it is now (every active adapter applied), at
``temperature``, up to ``max_new_tokens`` tokens or EOS. The suite's reward (``metactl.rewards``,
chosen in ``suite.yaml``) scores each completion; a completion's advantage is its reward minus its
group's mean, over the group's std (TRL's ``scale_rewards="group"``). The loss is TRL's
``loss_type="grpo"``: per token the clipped ratio term ``-min(r A, clip(r, 1-eps, 1+eps) A)`` plus
``beta`` times the k3 estimate of KL(model || base), ``exp(ref - lp) - (ref - lp) - 1``, averaged
over each completion's tokens, then over completions (``tests/test_grpo.py`` checks it against
``GRPOTrainer._compute_loss`` on the same log-probs and advantages; trl reads its log-probs from
temperature-scaled logits, so the two agree at the default ``temperature`` 1). One optimisation step per
sample (TRL's ``num_iterations=1``), so the old policy is the current one and the ratio is 1 in
value; its gradient is the policy gradient.

The reference is the base model: the adapters switched off (``base_only``), the path the DPO
reference and the retain KL take. The completions are drawn from a generator seeded by the
episode's own (``sample``), so a run is repeatable; a reading outside a training step (the
interference reading) samples with a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from metactl.adapters import base_only
from metactl.errors import check_number
from metactl.forward import EncodedPairs, forward_logits, pad_rows, token_logprobs
from metactl.tools.base import Tool, ToolConfig

if TYPE_CHECKING:
    from metactl.rewards import RewardSpec
    from metactl.tasks.suite import TaskSuite


@dataclass
class GRPOConfig(ToolConfig):
    lr: float = field(default=1e-3, metadata={"help": "base learning rate; a phase's train control multiplies it"})
    batch_size: int = field(
        default=8, metadata={"help": "prompts per step (each sampled group_size times: the step's completions)"}
    )
    group_size: int = field(
        default=4, metadata={"help": "completions sampled per prompt; advantages are relative to their group"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the completions"})
    max_new_tokens: int = field(
        default=4, metadata={"help": "longest completion sampled, in tokens (EOS ends one earlier)"}
    )
    beta: float = field(
        default=0.04, metadata={"help": "weight of the k3 KL to the base model per token (0: no KL term)"}
    )
    epsilon: float = field(default=0.2, metadata={"help": "ratio clip: r is clipped to [1 - epsilon, 1 + epsilon]"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.group_size = int(check_number("tools.grpo.group_size", self.group_size, low=2, high=1024, integer=True))
        self.temperature = check_number("tools.grpo.temperature", self.temperature, low=0.0, high=100.0, low_open=True)
        self.max_new_tokens = int(
            check_number("tools.grpo.max_new_tokens", self.max_new_tokens, low=1, high=4096, integer=True)
        )
        self.beta = check_number("tools.grpo.beta", self.beta, low=0.0, high=100.0)
        self.epsilon = check_number("tools.grpo.epsilon", self.epsilon, low=0.0, high=10.0, low_open=True)


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each reward minus its group's mean, over the group's std (Bessel-corrected) + 1e-4: TRL's
    ``scale_rewards="group"``. Rows come in consecutive groups of ``group_size``."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + 1e-4)).view(-1)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    epsilon: float,
) -> torch.Tensor:
    """TRL's ``loss_type="grpo"`` with token-level ratios: per-token tensors ``[B, T]``, ``mask``
    over completion tokens, one advantage per completion ``[B]``."""
    adv = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0:
        # Padding positions are masked out below, but exp() of their arbitrary log-ratio may overflow
        # to inf, and inf * 0 is nan: zero them first.
        diff = torch.where(mask.bool(), ref_logps - logps, torch.zeros_like(logps))
        per_token = per_token + beta * (torch.exp(diff) - diff - 1)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


@torch.no_grad()
def sample_completions(
    model, prompts: list[list[int]], max_new_tokens: int, temperature: float, eos_id: int, pad_id: int,
    gen: torch.Generator,
) -> list[list[int]]:
    """Token ids sampled after each prompt, each ending at its first EOS (kept) or after
    ``max_new_tokens``. Rows stay right-padded, so (causal model) no real token sees padding and
    each row's next token is read at its own last position."""
    rows = [list(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    live = list(range(len(rows)))
    device = next(model.parameters()).device
    for _ in range(max_new_tokens):
        if not live:
            break
        ids, _ = pad_rows([rows[i] for i in live], pad_id, left=False)
        logits = model(input_ids=ids.to(device)).logits
        last = torch.tensor([len(rows[i]) - 1 for i in live], device=device)
        probs = torch.softmax(logits[torch.arange(len(live), device=device), last].float() / temperature, dim=-1)
        picked = torch.multinomial(probs, 1, generator=gen).squeeze(1).tolist()
        still = []
        for i, tok in zip(live, picked):
            rows[i].append(tok)
            out[i].append(tok)
            if tok != eos_id:
                still.append(i)
        live = still
    return out


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> EncodedPairs:
    """Right-padded ``prompt + completion`` rows, the completion tokens masked in (as encode_pairs)."""
    rows = [p + c for p, c in zip(prompts, completions)]
    ids, att = pad_rows(rows, pad_id, left=False)
    mask = torch.zeros((len(rows), ids.shape[1] - 1), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        mask[i, len(p) - 1 : len(p) - 1 + len(c)] = 1.0
    return EncodedPairs(ids, att, mask)


class GRPOTool(Tool):
    name = "grpo"
    Config = GRPOConfig
    fields = ("prompt",)

    def __init__(self, config: GRPOConfig, rows: list[dict], tokenizer, reward: RewardSpec | None = None) -> None:
        super().__init__(config, rows, tokenizer)
        if reward is None:
            raise ValueError("grpo needs the suite's reward spec (suite.yaml: rewards: {grpo: {name: ..., ...}})")
        self.reward = reward
        self.prompt_ids: list[list[int]] = tokenizer([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id
        self._peft_model = None
        self._seed: int | None = None  # drawn with a training step's rows (sample), used once by its rollout

    @classmethod
    def from_suite(cls, config: GRPOConfig, suite: TaskSuite, tokenizer) -> GRPOTool:
        return cls(config, suite.data[cls.name], tokenizer, suite.rewards.get(cls.name))

    def prepare(self, peft_model) -> None:
        self._peft_model = peft_model

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        index = super().sample(gen)
        # The completions' randomness comes from the episode's generator too, drawn with the rows.
        self._seed = int(torch.randint(2**62, (1,), generator=gen))
        return index

    def rollout(self, model, index: torch.Tensor) -> tuple[EncodedPairs, tuple[torch.Tensor, torch.Tensor, float]]:
        """Sample the groups for rows ``index`` from ``model`` (as it is routed now: the population
        engine routes one episode's adapters), reward them, and read the base's log-probs of them."""
        # A training step's seed comes from the episode's generator with its rows; a reading made
        # outside a step (the interference reading) samples with a fixed seed, so it does not depend
        # on what ran before it.
        seed, self._seed = (self._seed if self._seed is not None else 0), None
        c = self.config
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        picked = [int(i) for i in index for _ in range(c.group_size)]
        prompts = [self.prompt_ids[i] for i in picked]
        was_training = model.training
        model.eval()  # sampling is acting, not training: no dropout
        try:
            completions = sample_completions(model, prompts, c.max_new_tokens, c.temperature, self.eos_id,
                                             self.pad_id, gen)
        finally:
            model.train(was_training)
        texts = self.tokenizer.batch_decode(
            [[t for t in comp if t != self.eos_id] for comp in completions], skip_special_tokens=True
        )
        rewards = torch.tensor([self.reward(t, self.rows[i]) for t, i in zip(texts, picked)], dtype=torch.float32)
        batch = pack(prompts, completions, self.pad_id).to(device)
        with torch.no_grad(), base_only(self._peft_model):
            ref = token_logprobs(forward_logits(self._peft_model, batch), batch.input_ids)
        return batch, (group_advantages(rewards, c.group_size).to(device), ref, float(rewards.mean()))

    def batch(self, index: torch.Tensor):
        raise RuntimeError("grpo samples from the model it trains: call rollout(model, index), not batch(index)")

    def loss_of(
        self, logits: torch.Tensor, batch: EncodedPairs, extra: tuple[torch.Tensor, torch.Tensor, float]
    ) -> torch.Tensor:
        """TRL's GRPO loss plus the constant ``1 - mean reward`` of the batch. The constant changes no
        gradient; it makes the value a reading of the tool's progress: with one update per sample the
        ratio is 1 and the group-centred advantages sum to 0, so GRPO's own value is only its KL term,
        and the value is what the episode logs, what ``max-gap`` (maxright) compares with its best so
        far, and what the controller reads as the tool's loss."""
        advantages, ref, mean_reward = extra
        lp = token_logprobs(logits, batch.input_ids)
        loss = grpo_loss(lp, lp.detach(), ref, advantages, batch.loss_mask, self.config.beta, self.config.epsilon)
        return loss + (1.0 - mean_reward)

    def loss(self, model, index: torch.Tensor) -> torch.Tensor:
        batch, extra = self.rollout(model, index)
        return self.loss_of(forward_logits(model, batch), batch, extra)
