"""Generation parity on imported models: lmlab's greedy ``generate`` gives the same tokens as transformers'
``generate()`` on an imported GPT-2 (left-padded prompts), T5 and BART (padded encoder inputs; BART's decoder
starts from the token its config names)."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, ids, right_padding

from lmlab.interop import load_hf
from lmlab.objectives.base import decoder_start_id

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


def _imported_seq2seq(tmp_path, cls, cfg):
    """A tiny random ``cls`` model from transformers, its lmlab import, and 3 encoder inputs right-padded."""
    hf = build(cls, cfg)
    hf.save_pretrained(tmp_path)
    model, _ = load_hf(tmp_path)
    x, mask = right_padding(ids(3, 12), [12, 9, 4], pad_id=cfg.pad_token_id)
    return hf, model, x, mask


def test_t5_greedy_matches_transformers(tmp_path):
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                dropout_rate=0.0, feed_forward_proj="gated-gelu", decoder_start_token_id=0,
                                pad_token_id=0, eos_token_id=1)
    hf, model, x, mask = _imported_seq2seq(tmp_path, transformers.T5ForConditionalGeneration, cfg)
    ref = hf.generate(x, attention_mask=mask, max_new_tokens=15, do_sample=False)
    got = generate.generate(model, x, mask, max_new_tokens=15, eos_token_id=1, pad_token_id=0,
                            decoder_start_token_id=0)
    assert torch.equal(got, ref)


def test_bart_starts_from_its_configured_token_and_matches_transformers(tmp_path, tokenizer):
    """BART's decoder starts from EOS (decoder_start_token_id 2), not from pad as lmlab's own seq2seq models."""
    cfg = transformers.BartConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=2,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, max_position_embeddings=40, dropout=0.0, attention_dropout=0.0,
                                  activation_dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=3,
                                  decoder_start_token_id=2, forced_eos_token_id=None)
    hf, model, x, mask = _imported_seq2seq(tmp_path, transformers.BartForConditionalGeneration, cfg)
    ref = hf.generate(x, attention_mask=mask, max_new_tokens=12, do_sample=False)
    got = generate.generate(model, x, mask, max_new_tokens=12, eos_token_id=3, pad_token_id=1)  # no start given
    assert got[0, 0] == 2 and torch.equal(got, ref)
    # generate_text, the pipelines and scoring take it too; a model lmlab trained itself starts from pad
    assert decoder_start_id(tokenizer, model) == 2 and decoder_start_id(tokenizer) == tokenizer.pad_id != 2
