"""Generation parity on imported models: lmlab's greedy ``generate`` gives the same tokens as transformers'
``generate()`` on an imported GPT-2 (left-padded prompts) and an imported T5 (padded encoder inputs)."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, ids

from lmlab.interop import load_hf

transformers = pytest.importorskip("transformers")
generate = pytest.importorskip("lmlab.infer.generate", reason="needs lmlab's generation (lmlab.infer.generate)")


def test_gpt2_greedy_matches_transformers(tmp_path):
    cfg = transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1,
                                  eos_token_id=2, pad_token_id=0)
    hf = build(transformers.GPT2LMHeadModel, cfg)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    x = ids(3, 8)
    mask = torch.ones_like(x)
    mask[1, :3] = mask[2, :5] = 0  # left padding
    x = x.masked_fill(mask == 0, 0)
    ref = hf.generate(x, attention_mask=mask, max_new_tokens=20, do_sample=False, eos_token_id=2, pad_token_id=0)
    got = generate.generate(model, x, mask, max_new_tokens=20, eos_token_id=2, pad_token_id=0)
    assert torch.equal(got, ref)


def test_t5_greedy_matches_transformers(tmp_path):
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                dropout_rate=0.0, feed_forward_proj="gated-gelu", decoder_start_token_id=0,
                                pad_token_id=0, eos_token_id=1)
    hf = build(transformers.T5ForConditionalGeneration, cfg)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    x = ids(3, 12)
    mask = torch.ones_like(x)
    mask[1, 9:] = mask[2, 4:] = 0
    x = x.masked_fill(mask == 0, 0)
    ref = hf.generate(x, attention_mask=mask, max_new_tokens=15, do_sample=False)
    got = generate.generate(model, x, mask, max_new_tokens=15, eos_token_id=1, pad_token_id=0,
                            decoder_start_token_id=0)
    assert torch.equal(got, ref)
