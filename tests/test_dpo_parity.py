"""metactl's DPO loss equals trl's ``DPOTrainer`` loss (``loss_type=["sigmoid"]``) on the same batch.

What trl 1.16 does with a plain-text (non-conversational) preference row, read from
``trl/trainer/dpo_trainer.py`` (``_prepare_dataset``, ``DataCollatorForPreference``, ``_compute_loss``):

* BOS: none of its own. It tokenizes ``prompt`` and ``prompt + chosen`` with ``tokenizer(text=...)``
  (``add_special_tokens=True``), so a BOS appears only if the tokenizer's post-processor adds one --
  metactl tokenises the same way, and the proxy tokenizer's post-processor adds it.
* EOS: it always appends ``tokenizer.eos_token`` to ``chosen`` and ``rejected`` (unless the text already
  ends with it) and scores that EOS as a completion token. metactl's DPO tool does the same
  (``encode_pairs(..., append_eos=True)``); both sides get the raw rows, so the test also checks
  that each appends the EOS itself.
* Completion start: where tokenized ``prompt`` and ``prompt + completion`` diverge (identical to
  metactl's separate tokenization for a char-level tokenizer). Right padding, ``[chosen; rejected]``
  halves, no truncation with ``max_length=None``, summed (not averaged) completion log-probs,
  ``-logsigmoid(beta * delta).mean()`` over pairs, label smoothing unused by ``"sigmoid"``.
* Reference with ``ref_model=None``: if the trainer wraps the model itself (``peft_config=...``) the
  reference is the model with adapters disabled -- what metactl uses. If it is handed an existing
  ``PeftModel`` it instead adds a ``ref`` adapter copied from ``default`` (the initial adapter, not the
  base), so this test passes the base model plus a ``peft_config`` and perturbs the adapter afterwards.
* trl 1.16 has no standalone DPO loss function (the loss is inline in ``DPOTrainer._compute_loss``),
  so there is no cheaper function-level parity test.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

trl = pytest.importorskip("trl")
peft = pytest.importorskip("peft")
datasets = pytest.importorskip("datasets")

from metactl.models.proxy import PROXY_SPECS, build_model
from metactl.proxy_language import build_tokenizer
from metactl.tools.dpo import DPOConfig, DPOTool

BETA = 0.1

# (a, b, wrong answer): varying prompt and completion lengths, chosen/rejected of unequal length too.
SUMS = [(47, 25, 62), (3, 4, 17), (88, 19, 97), (5, 95, 90), (60, 7, 167), (9, 9, 8)]


def _rows() -> list[dict]:
    return [{"prompt": f"sum of {a} and {b} is", "chosen": f" {a + b}.", "rejected": f" {w}."} for a, b, w in SUMS]


def test_dpo_loss_matches_trl_dpo_trainer(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = build_tokenizer()
    spec = dataclasses.replace(PROXY_SPECS["proxy-tiny"], hidden=32, intermediate=64, layers=2, heads=2)
    base = build_model(spec, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    rows = _rows()
    n = len(rows)
    assert tok("a")["input_ids"][0] == tok.bos_token_id  # the tokenizer adds BOS itself: see module docstring

    # trl side: BOS written into the prompt (metactl adds it itself); EOS left for trl to append.
    trl_rows = rows  # the proxy tokenizer adds BOS itself, for trl as for metactl
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        beta=BETA,
        loss_type=["sigmoid"],
        label_smoothing=0.0,
        max_length=None,
        precompute_ref_log_probs=False,
        per_device_train_batch_size=n,
        per_device_eval_batch_size=n,
        activation_checkpointing=False,  # trl's base config defaults gradient_checkpointing (its alias) to True
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to=[],
        disable_dropout=True,
        seed=0,
    )
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    trainer = trl.DPOTrainer(
        model=base,
        ref_model=None,
        args=args,
        train_dataset=datasets.Dataset.from_list(trl_rows),
        processing_class=tok,
        peft_config=lora,
    )
    model = trainer.model
    assert isinstance(model, peft.PeftModel) and list(model.peft_config) == ["default"]  # no "ref" adapter
    assert trainer.ref_model is None  # reference = this model with adapters disabled

    # Move the policy away from the reference (fresh LoRA has lora_B == 0, i.e. policy == reference).
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 1.0)
    model.eval()

    # trl appended EOS to every completion itself.
    for ex in trainer.train_dataset:
        assert ex["chosen_ids"][-1] == tok.eos_token_id and ex["rejected_ids"][-1] == tok.eos_token_id
        assert ex["prompt_ids"][0] == tok.bos_token_id

    # One batch of all rows, in order, straight from the trainer's own (sequential) eval dataloader.
    batches = list(trainer.get_eval_dataloader(trainer.train_dataset))
    assert len(batches) == 1
    batch = trainer._prepare_inputs(batches[0])

    # metactl side: the same raw rows (it appends EOS itself, as trl does).
    tool = DPOTool(DPOConfig(beta=BETA), rows, tok)
    tool.prepare(model)
    index = torch.arange(n)

    # Identical token sequences and identical scored positions (both shift by one for next-token targets).
    enc = tool.data.select(torch.cat([index, index + n]))
    assert torch.equal(enc.input_ids, batch["input_ids"])
    assert torch.equal(enc.attention_mask, batch["attention_mask"])
    assert torch.equal(enc.loss_mask, batch["completion_mask"][:, 1:].float())

    params = [p for p in model.parameters() if p.requires_grad]
    mc_loss = tool.loss(model, index)
    mc_grads = torch.autograd.grad(mc_loss, params)
    trl_loss = trainer.compute_loss(model, batch)
    trl_grads = torch.autograd.grad(trl_loss, params)

    assert abs(mc_loss.item() - math.log(2)) > 1e-3, "policy == reference: the comparison would be vacuous"
    assert torch.allclose(mc_loss, trl_loss, atol=1e-5), (mc_loss.item(), trl_loss.item())
    for g_mc, g_trl in zip(mc_grads, trl_grads):
        assert torch.allclose(g_mc, g_trl, atol=1e-5, rtol=1e-4)
