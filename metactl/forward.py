"""Tokenising prompt/completion pairs and scoring completions with teacher forcing.

Every tool loss and every behaviour score reduces to "log-probability of a completion given a
prompt", so the packing and the log-prob gather live here once.
"""

from __future__ import annotations

import functools
import inspect
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

    def to(self, device: torch.device | str) -> EncodedPairs:
        return EncodedPairs(self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device))

    def select(self, index: torch.Tensor) -> EncodedPairs:
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


def forward_logits(model, batch: EncodedPairs) -> torch.Tensor:
    # Rows are right-padded and the model is causal, so real tokens never see padding: skipping
    # the attention mask lets SDPA take its fused causal path and gives identical logits there.
    return model(input_ids=batch.input_ids).logits


def completion_logprobs(model, batch: EncodedPairs) -> torch.Tensor:
    """Summed completion log-prob per row (the quantity DPO and the scorers compare)."""
    return (token_logprobs(forward_logits(model, batch), batch.input_ids) * batch.loss_mask).sum(-1)


def token_kl(base_logp: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of KL(base || model), from the base's log-probs ``[B, T, V]``.

    Only the masked positions are gathered before the vocabulary-wide ops, and ``kl_div`` fuses
    them: with a 49k vocabulary the [B, T, V] intermediates, not the model, dominated a step.
    """
    keep = mask.bool()
    logp = torch.log_softmax(logits[keep].float(), dim=-1)
    kl = torch.nn.functional.kl_div(logp, base_logp[keep], log_target=True, reduction="sum")
    return kl / keep.sum().clamp_min(1)


@torch.no_grad()
def chunked_completion_logprobs(model, enc: EncodedPairs, chunk: int = 256) -> torch.Tensor:
    """:func:`completion_logprobs` over many rows, ``chunk`` at a time, without gradients."""
    out = [
        completion_logprobs(model, enc.select(torch.arange(i, min(i + chunk, len(enc)))))
        for i in range(0, len(enc), chunk)
    ]
    return torch.cat(out)


def sequence_logprobs(model, tokenizer, prompts: list[str], completions: list[str], chunk: int = 256) -> torch.Tensor:
    """Convenience wrapper: encode then score in chunks, no gradients."""
    return chunked_completion_logprobs(model, encode_pairs(tokenizer, prompts, completions), chunk)


class SharedPrefixProbes:
    """Many completions per prompt, scored with the prompt encoded once.

    Behaviour probes compare 2-4 completions of the same prompt, and the prompt is most of
    each sequence, so the prompts run once (left-padded, with a KV cache) and only the short
    completions run per variant on top of the cache expanded to one row per variant. On the
    proxy suite this roughly halves the tokens a scoring pass processes. ``logprobs`` equals
    ``completion_logprobs`` on the concatenated rows (tested).
    """

    def __init__(self, tokenizer, prompts: list[str], completions: list[list[str]], chunk: int = 128) -> None:
        self.chunk = chunk
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        self.n_prompts = len(p_ids)
        self.prompt_ids, self.prompt_mask = pad_rows(p_ids, pad, left=True)
        flat = [c for cs in completions for c in cs]
        self.item = torch.tensor([i for i, cs in enumerate(completions) for _ in cs], dtype=torch.long)
        c_ids = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        if any(len(c) == 0 for c in c_ids):
            raise ValueError("every probe completion must have at least one token")
        self.comp_ids, self.comp_mask = pad_rows(c_ids, pad, left=False)

    def __len__(self) -> int:
        return len(self.item)

    def to(self, device: torch.device | str) -> SharedPrefixProbes:
        """Move the encoded probes to ``device`` (in place; returns self)."""
        for name in ("prompt_ids", "prompt_mask", "item", "comp_ids", "comp_mask"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @torch.no_grad()
    def logprobs(self, model) -> torch.Tensor:
        """Summed completion log-prob of every variant, in the order they were given."""
        return block_logprobs([self], model)[0]

    def same_layout(self, other: SharedPrefixProbes) -> bool:
        """Same prompts-to-variants layout (the tokens may differ): scorable as blocks of one batch."""
        return self.n_prompts == other.n_prompts and self.chunk == other.chunk and torch.equal(self.item, other.item)


@torch.no_grad()
def block_logprobs(probes: list[SharedPrefixProbes], model) -> list[torch.Tensor]:
    """:meth:`SharedPrefixProbes.logprobs` of several probe sets with one layout, as blocks of one batch.

    Block ``b`` of every forward holds ``probes[b]``'s rows, each block the same number of rows (a
    population model routes block ``b`` through its episode ``b``'s adapters); with one probe set
    this is the plain single-model pass. Left padding of the prompts and right padding of the
    completions widen to the longest block; masks and position ids keep every real token's
    logits what they are alone.
    """
    first = probes[0]
    if any(not first.same_layout(p) for p in probes[1:]):
        raise ValueError("block_logprobs: probe sets differ in layout (prompts, variants per prompt or chunk)")
    outs = [torch.empty(len(first.item), device=first.item.device) for _ in probes]
    for start in range(0, first.n_prompts, first.chunk):
        items = torch.arange(start, min(start + first.chunk, first.n_prompts))
        rows = torch.nonzero((first.item >= items[0]) & (first.item <= items[-1])).squeeze(-1)
        for out, lp in zip(outs, _block_chunk(probes, model, items, rows)):
            out[rows] = lp
    return outs


def _block_chunk(
    probes: list[SharedPrefixProbes], model, items: torch.Tensor, rows: torch.Tensor
) -> list[torch.Tensor]:
    n_blocks, n_items, n_rows = len(probes), len(items), len(rows)
    prompts = []
    for p in probes:
        mask = p.prompt_mask[items]
        keep = int(mask.sum(1).max())  # trim left padding no prompt of this chunk needs
        prompts.append((p.prompt_ids[items][:, -keep:], mask[:, -keep:]))
    width = max(ids.shape[1] for ids, _ in prompts)
    ids = torch.cat([torch.nn.functional.pad(i, (width - i.shape[1], 0)) for i, _ in prompts])
    mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, m in prompts])
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    first = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    local = probes[0].item[rows] - items[0]
    # One cache row per variant (index_select repeats rows), block b's variants on block b's prompts.
    expand = torch.cat([local + b * n_items for b in range(n_blocks)])
    key = cache_keyword(model)
    cache = first[key]
    cache.reorder_cache(expand)
    comps = []
    for p in probes:
        c_mask = p.comp_mask[rows]
        w = int(c_mask.sum(1).max())
        comps.append((p.comp_ids[rows][:, :w], c_mask[:, :w]))
    cw = max(c.shape[1] for c, _ in comps)
    c_ids = torch.cat([torch.nn.functional.pad(c, (0, cw - c.shape[1])) for c, _ in comps])
    c_mask = torch.cat([torch.nn.functional.pad(m, (0, cw - m.shape[1])) for _, m in comps])
    c_pos = pos[expand, -1:] + 1 + torch.arange(cw, device=pos.device)
    second = model(
        input_ids=c_ids,
        attention_mask=torch.cat([mask[expand], c_mask], dim=1),
        position_ids=c_pos,
        **{key: cache},
    )
    # Token 0 of a completion is predicted by the prompt's last position; token t by the
    # completion's position t-1.
    logits = torch.cat([first.logits[expand, -1:], second.logits[:, :-1]], dim=1).float()
    lp = torch.gather(logits, -1, c_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    return list((lp * c_mask).sum(-1).split(n_rows))


def concat_pairs(batches: list[EncodedPairs]) -> EncodedPairs:
    """Row blocks of one batch: each padded on the right to the widest (padding a causal model's
    rows on the right leaves their real tokens' logits unchanged)."""
    width = max(b.input_ids.shape[1] for b in batches)

    def pad(t: torch.Tensor, w: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, w - t.shape[1]))

    return EncodedPairs(
        torch.cat([pad(b.input_ids, width) for b in batches]),
        torch.cat([pad(b.attention_mask, width) for b in batches]),
        torch.cat([pad(b.loss_mask, width - 1) for b in batches]),
    )


@functools.cache
def _forward_takes_cache(cls: type) -> bool:
    return "cache" in inspect.signature(cls.forward).parameters


def cache_keyword(model) -> str:
    """The name of the KV-cache argument and output: transformers 5.24 renamed ``past_key_values``
    to ``cache`` (the old name still works there, with a FutureWarning on every call)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if _forward_takes_cache(type(base)) else "past_key_values"


def pad_rows(rows: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to one width on the ``left`` or the right, and their attention mask."""
    width = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            ids[i, width - len(r) :], mask[i, width - len(r) :] = torch.tensor(r), 1
        else:
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask
