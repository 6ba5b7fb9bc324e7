"""Attention masks and the attention module."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmlab.model.attention import Attention, build_mask


def test_nothing_to_mask_is_none():
    assert build_mask(4, 4, causal=False) is None


def test_causal_padding_and_segments_combine():
    pad = torch.tensor([[1, 1, 1, 0]])
    seg = torch.tensor([[0, 0, 1, 1]])
    mask = build_mask(4, 4, causal=True, key_padding=pad, q_segments=seg, k_segments=seg)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0],
                             [1, 1, 0, 0],
                             [0, 0, 1, 0],
                             [0, 0, 1, 1]], dtype=torch.bool)  # the padding query sees itself, not key 3
    assert torch.equal(mask, expected)


def test_causal_mask_with_offset_for_cached_keys():
    mask = build_mask(2, 5, causal=True, offset=3)[0, 0]
    assert torch.equal(mask, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    assert build_mask(1, 5, causal=True, offset=4) is None  # one new token sees everything


def test_cross_attention_row_without_keys_is_finite():
    pad = torch.tensor([[0, 0, 0]])  # an all-padding source
    mask = build_mask(2, 3, causal=False, key_padding=pad, self_attention=False)
    assert mask.all()
    attn = Attention(16, 2, 2, 8, bias=True, cross=True)
    y = attn(torch.randn(1, 2, 16), context=torch.randn(1, 3, 16), mask=mask)
    assert torch.isfinite(y).all()


def test_grouped_query_attention_equals_repeated_heads():
    torch.manual_seed(0)
    gqa = Attention(32, n_heads=4, kv_heads=2, head_dim=8, bias=False)
    mha = Attention(32, n_heads=4, kv_heads=4, head_dim=8, bias=False)
    q, k, v = gqa.qkv.weight.split([32, 16, 16])
    # kv head j serves query heads 2j and 2j+1
    rep = lambda w: w.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([q, rep(k), rep(v)]))
        mha.o.weight.copy_(gqa.o.weight)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(gqa(x, is_causal=True), mha(x, is_causal=True))


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(16, 2, 2, 8, bias=True, scale=1.0)
    x = torch.randn(1, 4, 16)
    bias = torch.randn(1, 2, 4, 4)
    q, k, v = attn.qkv(x).view(1, 4, 3, 2, 8).permute(2, 0, 3, 1, 4)
    ref = F.softmax(q @ k.transpose(-1, -2) + bias, dim=-1) @ v  # no 1/sqrt(d): T5
    ref = attn.o(ref.transpose(1, 2).reshape(1, 4, 16))
    torch.testing.assert_close(attn(x, mask=bias), ref)
