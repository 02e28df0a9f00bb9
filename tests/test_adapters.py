"""Depth groups, module kinds per architecture, output scales, and peft-format round trips."""

import pytest
import torch

from metactl.adapters import AdapterSet, LoraSettings
from metactl.errors import ConfigError
from metactl.layer_map import group_of, resolve_layer_map


@pytest.mark.parametrize(
    "n_layers, expected",
    [
        (4, [0, 1, 2, 3]),
        (6, [0, 0, 1, 2, 2, 3]),
        (30, [0] * 8 + [1] * 7 + [2] * 8 + [3] * 7),
    ],
)
def test_relative_depth_groups(n_layers, expected):
    assert [group_of(i, n_layers, 4) for i in range(n_layers)] == expected


def _gpt2(n_layer=3):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, vocab_size=50, n_positions=64)).eval()


def _llama(layers=4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=layers, hidden_size=32, intermediate_size=64,
                                        num_attention_heads=2, num_key_value_heads=2, vocab_size=50)).eval()


def test_llama_module_kinds():
    lm = resolve_layer_map(_llama(), 4)
    kinds = {m.name.split(".")[-1]: m.kind for m in lm.modules}
    assert kinds == {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn",
                     "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    assert not lm.conv1d


def test_gpt2_module_kinds_from_its_own_names():
    lm = resolve_layer_map(_gpt2(), 3)
    kinds = {".".join(m.name.split(".")[-2:]): m.kind for m in lm.modules}
    assert kinds == {"attn.c_attn": "attn", "attn.c_proj": "attn", "mlp.c_fc": "mlp", "mlp.c_proj": "mlp"}
    assert lm.conv1d and lm.n_layers == 3


def test_too_few_layers_for_groups():
    with pytest.raises(ConfigError, match="layer_groups <= 2"):
        resolve_layer_map(_llama(layers=2), 4)


@pytest.mark.parametrize("make", [_llama, _gpt2])
def test_output_scale_and_peft_round_trip(make, tmp_path):
    from peft import PeftModel

    model = make()
    lm = resolve_layer_map(model, 2)
    ads = AdapterSet(model, ["sft", "dpo"], lm, LoraSettings(r=4, alpha=8))
    ads.reset(0)
    with torch.no_grad():
        for name, p in ads.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    scales = {"sft": [[0.5, 1.5], [0.0, 1.0]], "dpo": [[1.0, 0.25], [2.0, 0.7]]}
    ads.set_output(scales)
    assert ads.output_scales() == scales
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        expected = ads.model(input_ids=ids).logits
    ads.save(tmp_path)

    base = make()
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "sft"), adapter_name="sft")
    reloaded.load_adapter(str(tmp_path / "dpo"), adapter_name="dpo")
    reloaded.base_model.set_adapter(["sft", "dpo"])
    with torch.no_grad():
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)


def test_shared_prefix_probes_equal_plain_scoring():
    from metactl.forward import SharedPrefixProbes, sequence_logprobs
    from metactl.proxy_language import build_tokenizer

    tok = build_tokenizer()
    model = _llama()
    model.resize_token_embeddings(len(tok))
    prompts = ["sum of 47 and 25 is", "what is 9 plus 8?", "1+1="]
    comps = [[" 72 ok.", " 72.", " 62."], [" 17."], [" 2.", " 3 yes.", " 11."]]
    shared = SharedPrefixProbes(tok, prompts, comps, chunk=2).logprobs(model)
    plain = sequence_logprobs(
        model, tok, [p for p, cs in zip(prompts, comps) for _ in cs], [c for cs in comps for c in cs]
    )
    assert torch.allclose(shared, plain, atol=1e-4)
