"""Tokenising prompt/completion pairs and scoring completions with teacher forcing.

Every tool loss and every behaviour score reduces to "log-probability of a completion given a
prompt", so the packing and the log-prob gather live here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncodedPairs:
    """Right-padded ``prompt + completion`` rows with a mask over completion tokens.

    ``loss_mask[i, t]`` is 1 where token ``t+1`` of row ``i`` belongs to the completion, i.e. it
    is aligned with the logits at position ``t`` (the shift every causal LM loss needs).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor) -> "EncodedPairs":
        ids, att, mask = self.input_ids[index], self.attention_mask[index], self.loss_mask[index]
        width = int(att.sum(1).max())  # trim the padding this subset does not need
        return EncodedPairs(ids[:, :width], att[:, :width], mask[:, : width - 1])


def encode_pairs(tokenizer, prompts: list[str], completions: list[str], append_eos: bool = False) -> EncodedPairs:
    """Tokenise prompt and completion separately (TRL convention) and right-pad the rows.

    ``append_eos`` ends every completion with EOS, as trl's SFT and DPO trainers do, so a
    trained model also learns where to stop; probes leave it off and score the text alone.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    # BOS follows the tokenizer's own convention (added by the prompt's special tokens or not at
    # all), exactly as trl's trainers tokenise, so losses and scores match theirs.
    p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    c_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    if append_eos:
        c_ids = [c + [tokenizer.eos_token_id] for c in c_ids]
    rows = [p + c for p, c in zip(p_ids, c_ids)]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for i, (row, p) in enumerate(zip(rows, p_ids)):
        ids[i, : len(row)] = torch.tensor(row)
        att[i, : len(row)] = 1
        start = max(len(p), 1)  # a document with no prompt is scored from its second token
        mask[i, start - 1 : len(row) - 1] = 1.0
    return EncodedPairs(ids, att, mask)


def encode_texts(tokenizer, texts: list[str]) -> EncodedPairs:
    """Plain documents: every token after the first is scored (language-modelling format)."""
    return encode_pairs(tokenizer, [""] * len(texts), list(texts))


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each next token, ``[B, T-1]``, without materialising a full log-softmax copy."""
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logprobs(model, batch: EncodedPairs) -> torch.Tensor:
    """Summed completion log-prob per row (the quantity DPO and the scorers compare)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return (token_logprobs(logits, batch.input_ids) * batch.loss_mask).sum(-1)


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: list[str], completions: list[str], chunk: int = 256) -> torch.Tensor:
    """Convenience wrapper: encode then score in chunks, no gradients."""
    enc = encode_pairs(tokenizer, prompts, completions)
    out = [completion_logprobs(model, enc.select(torch.arange(i, min(i + chunk, len(enc))))) for i in range(0, len(enc), chunk)]
    return torch.cat(out)
