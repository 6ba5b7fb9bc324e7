"""Llama (``lmlab/interop/llama.py``): LlamaForCausalLM with grouped-query attention, tied and untied heads."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, check_parity, ids, right_padding

from lmlab.config import model_preset
from lmlab.errors import InteropError
from lmlab.interop import load_hf, save_hf
from lmlab.model import build_model

transformers = pytest.importorskip("transformers")


def llama_config(**kw):
    return transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                    rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, **kw)


@pytest.mark.parametrize("tied, bias, head_dim", [(False, False, 8), (True, True, 16)])
def test_llama_parity(tmp_path, tied, bias, head_dim):
    cfg = llama_config(tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias, head_dim=head_dim,
                       rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    hf = build(transformers.LlamaForCausalLM, cfg)
    x, mask = right_padding(ids(3, 20), [20, 13, 6])
    model, _, _ = check_parity(hf, transformers.AutoModelForCausalLM, tmp_path,
                               lambda m: m(x, attention_mask=mask).logits,
                               lambda m: m(x, attention_mask=mask).logits, where=mask.bool())
    c = model.config
    assert (c.kv_heads, c.n_heads, c.head_dim, c.tie_embeddings, c.bias, c.rope_theta) == (2, 4, head_dim, tied,
                                                                                           bias, 500.0)


def test_llama_scaled_rope_is_refused(tmp_path):
    cfg = llama_config(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})
    build(transformers.LlamaForCausalLM, cfg).save_pretrained(tmp_path)
    with pytest.raises(InteropError, match="rope_type = 'linear'"):
        load_hf(tmp_path)


def test_lmlab_llama_preset_exports(tmp_path):
    torch.manual_seed(0)
    model = build_model(model_preset("llama-tiny", vocab_size=V)).eval()
    assert model.config.kv_heads < model.config.n_heads
    back = transformers.AutoModelForCausalLM.from_pretrained(save_hf(model, None, tmp_path)).eval()
    x = ids(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, model(x).logits, atol=1e-4, rtol=0)
