"""Built-in proxy models: small Llama-architecture LMs pretrained on the proxy world.

The weights are the output of :func:`pretrain` (also run by ``scripts/pretrain_proxy.py``); a
shipped copy under ``metactl/assets/<name>`` is used when present, otherwise the model is built on
first use and cached, so the first call works offline either way.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from metactl import proxy_language as world
from metactl.rundir import atomic_write_dir


@dataclass(frozen=True)
class ProxySpec:
    """Architecture and pretraining budget of one built-in proxy."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    steps: int
    batch: int = 64
    seq_len: int = 64
    lr: float = 3e-3
    seed: int = 0
    description: str = ""


PROXY_SPECS: dict[str, ProxySpec] = {
    "proxy-tiny": ProxySpec(
        name="proxy-tiny", layers=4, hidden=128, intermediate=256, heads=4, steps=2400,
        description="4-layer, hidden-128 Llama pretrained on the proxy world (default for controller training)",
    ),
    "proxy-large": ProxySpec(
        name="proxy-large", layers=8, hidden=256, intermediate=512, heads=8, steps=1000, lr=1.5e-3,
        description="8-layer, hidden-256 Llama (2x deeper, 2x wider) pretrained on the proxy world (for transfer)",
    ),
}


def build_model(spec: ProxySpec, vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    return LlamaForCausalLM(config)


def _packed_batches(tokenizer, spec: ProxySpec):
    """Endless packed rows of ``seq_len`` tokens: ``<s>doc</s><s>doc</s>...``."""
    stream = world.pretraining_examples(spec.seed)
    eos = tokenizer.eos_token_id
    buf: list[int] = []
    while True:
        rows = []
        while len(rows) < spec.batch:
            while len(buf) < spec.seq_len:
                buf += tokenizer(next(stream))["input_ids"] + [eos]  # the tokenizer adds BOS
            rows.append(buf[: spec.seq_len])
            buf = buf[spec.seq_len:]
        yield torch.tensor(rows)


@torch.no_grad()
def sum_accuracy(model, tokenizer, n: int = 200, seed: int = 1234) -> dict[str, float]:
    """Teacher-forced accuracy of the base on sums: correct answer vs its dropped-carry twin."""
    from metactl.forward import sequence_logprobs

    rng = random.Random(seed)
    out = {}
    for template in world.SUM_TEMPLATES:
        prompts, right, wrong = [], [], []
        while len(prompts) < n:
            a, b = rng.randint(0, world.MAX_OPERAND), rng.randint(0, world.MAX_OPERAND)
            if not world.has_carry(a, b):
                continue
            prompts.append(world.sum_prompt(template, a, b))
            right.append(world.answer_text(a + b, None))
            wrong.append(world.answer_text(world.dropped_carry(a, b), None))
        lp_right = sequence_logprobs(model, tokenizer, prompts, right)
        lp_wrong = sequence_logprobs(model, tokenizer, prompts, wrong)
        out[template] = float((lp_right > lp_wrong).float().mean())
    return out


def pretrain(spec: ProxySpec, out_dir: Path, progress: bool = True, threads: int | None = None) -> Path:
    """Pretrain ``spec`` from scratch on the proxy world and save it in HF format to ``out_dir``.

    Deterministic for a given spec on CPU (seeded data stream and init, fixed thread count).
    """
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    tokenizer = world.build_tokenizer()
    model = build_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, spec.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return spec.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, spec.steps - warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    batches = _packed_batches(tokenizer, spec)
    model.train()
    t0 = time.time()
    bar = tqdm(range(spec.steps), desc=f"pretraining {spec.name}", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ids = next(batches)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    acc = sum_accuracy(model, tokenizer)
    report = (
        f"spec: {spec}\nfinal loss: {loss.item():.4f}\nseconds: {time.time() - t0:.0f}\n"
        f"torch threads: {torch.get_num_threads()}\nsum accuracy (carry pairs, teacher-forced): {acc}\n"
    )

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain_report.txt").write_text(report)

    return atomic_write_dir(out_dir, fill)
