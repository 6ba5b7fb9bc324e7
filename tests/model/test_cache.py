"""KV cache: incremental decoding gives the logits of a full forward."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ids, tiny

from lmlab.model import KVCache


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "t5-tiny"])
def test_incremental_decoding_matches_full_forward(name):
    model = tiny(name)
    x = ids(2, 12)
    src = ids(2, 9, seed=1)
    cache = KVCache(max_len=16)
    with torch.no_grad():
        if model.arch == "encoder-decoder":
            full = model(src, decoder_input_ids=x).logits
            # a prompt of 5, then one token at a time without the encoder
            steps = [model(src, decoder_input_ids=x[:, :5], kv_cache=cache).logits]
            steps += [model(None, decoder_input_ids=x[:, t:t + 1], kv_cache=cache).logits
                      for t in range(5, 12)]
        else:
            full = model(x).logits
            steps = [model(x[:, :5], kv_cache=cache).logits]
            steps += [model(x[:, t:t + 1], kv_cache=cache).logits for t in range(5, 10)]
            steps += [model(x[:, 10:12], kv_cache=cache).logits]  # two at once after the prompt
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_cache_with_padding_mask_covers_cached_keys():
    model = tiny("gpt2-tiny")
    x = ids(2, 8)
    mask = torch.ones_like(x)
    mask[1, :2] = 0  # left padding, with explicit positions
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    cache = KVCache(max_len=8)
    with torch.no_grad():
        full = model(x, attention_mask=mask, position_ids=pos).logits
        a = model(x[:, :6], attention_mask=mask[:, :6], position_ids=pos[:, :6], kv_cache=cache).logits
        b = model(x[:, 6:], attention_mask=mask, position_ids=pos[:, 6:], kv_cache=cache).logits
    torch.testing.assert_close(torch.cat([a, b], 1)[mask.bool()], full[mask.bool()], atol=1e-5, rtol=0)


def test_cache_errors_and_reorder():
    model = tiny("llama-tiny")
    cache = KVCache(max_len=4)
    x = ids(2, 3)
    with torch.no_grad():
        model(x, kv_cache=cache)
        with pytest.raises(ValueError, match="full"):
            model(x, kv_cache=cache)
    cache = KVCache(max_len=4)
    with pytest.raises(ValueError, match="segment"):
        model(x, segment_ids=torch.zeros_like(x), kv_cache=cache)
    t5 = tiny("t5-tiny")
    cache = KVCache(max_len=4)
    with torch.no_grad():
        t5(x, decoder_input_ids=x[:, :1], kv_cache=cache)
        with pytest.raises(ValueError, match="input_ids=None"):
            t5(x, decoder_input_ids=x[:, 1:2], kv_cache=cache)
        cache.reorder(torch.tensor([1, 1]))
    assert cache.k[0].shape[0] == 2 and torch.equal(cache.k[0][0], cache.k[0][1])
    assert torch.equal(cache.cross[0][0][0], cache.cross[0][0][1])
