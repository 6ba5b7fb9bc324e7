"""build_model: config to modules, initialisation, tied embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.config import model_preset
from lmlab.errors import ConfigError
from lmlab.model import build_model


def test_vocab_size_zero_is_a_config_error():
    with pytest.raises(ConfigError, match="tokenizer"):
        build_model(model_preset("gpt2-tiny"))


def test_tied_and_untied_heads():
    gpt = build_model(model_preset("gpt2-tiny", vocab_size=50))
    assert gpt.head.proj.weight is gpt.embed.weight
    llama = build_model(model_preset("llama-tiny", vocab_size=50))
    assert llama.head.proj.weight is not llama.embed.weight
    assert gpt.config.vocab_size == 50


def test_layout_follows_the_options():
    bert = build_model(model_preset("bert-tiny", vocab_size=50))
    assert bert.decoder is None and bert.encoder.type_emb is not None and bert.encoder.final_norm is None
    assert bert.head.transform is not None and bert.head.proj.bias is not None
    t5 = build_model(model_preset("t5-tiny", vocab_size=50))
    assert t5.encoder.rel_bias.bidirectional and not t5.decoder.rel_bias.bidirectional
    assert t5.decoder.layers[0].cross_attn.scale == 1.0 and t5.encoder.pos_emb is None
    assert all(p.dim() > 1 or "norm" in n or "rel_bias" in n for n, p in t5.named_parameters())  # no biases
    cfg = model_preset("gpt2-tiny", vocab_size=50, d_head=32, n_decoder_layers=0)
    model = build_model(cfg)
    assert model.decoder.layers[0].attn.qkv.weight.shape == (3 * 4 * 32, 64)


def test_init():
    torch.manual_seed(0)
    model = build_model(model_preset("gpt2-small", vocab_size=1000))
    block = model.decoder.layers[0]
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.attn_norm.weight == 1)
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.mlp.down.weight.std().item() == pytest.approx(0.02 / math.sqrt(12), rel=0.05)
