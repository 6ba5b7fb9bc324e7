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


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "t5-tiny"])
def test_bfloat16_keys_are_cached_in_float32_on_a_cpu(name, monkeypatch):
    """A bfloat16 model's cache holds its keys and values (cross-attention's too) in float32, their values
    unchanged, and cached attention runs in float32; the steps give the bfloat16 forward's logits."""
    import torch.nn.functional as F

    model = tiny(name).to(torch.bfloat16)
    x, src = ids(2, 12), ids(2, 9, seed=1)
    extra = {"decoder_input_ids": x} if model.arch == "encoder-decoder" else {}
    attention, dtypes = F.scaled_dot_product_attention, []
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q, *a, **k: dtypes.append(q.dtype) or attention(q, *a, **k))
    cache = KVCache(max_len=16)
    with torch.no_grad():
        if extra:
            full = model(src, **extra).logits
            steps = [model(src, decoder_input_ids=x[:, :5], kv_cache=cache).logits]
            steps += [model(None, decoder_input_ids=x[:, t:t + 1], kv_cache=cache).logits for t in range(5, 12)]
        else:
            full = model(x).logits
            steps = [model(x[:, :5], kv_cache=cache).logits]
            steps += [model(x[:, t:t + 1], kv_cache=cache).logits for t in range(5, 12)]
    layers = len(cache.k)
    assert set(dtypes[:-len(steps) * layers * (2 if extra else 1)]) == {torch.bfloat16}  # the full forward
    assert set(dtypes[-len(steps) * layers * (2 if extra else 1):]) == {torch.float32}  # every cached step
    kept = [*cache.k, *cache.v, *(t for kv in cache.cross for t in kv)]
    assert {t.dtype for t in kept} == {torch.float32} and len(kept) == layers * (4 if extra else 2)
    assert all(torch.equal(t, t.bfloat16().float()) for t in kept)  # bfloat16 values, kept exactly
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=0.03, rtol=0.02)


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


def test_repeated_rows_share_cross_entries_and_match_copied_inputs():
    """After ``repeat`` (beams), a group's rows read their input's cross keys once; the logits equal those of a
    cache built from inputs copied row by row, through reorders within each group (as beam search does)."""
    model = tiny("t5-tiny")
    src, n = ids(2, 9, seed=1), 3
    mask = torch.ones_like(src)
    mask[1, 6:] = 0  # encoder padding, kept per input
    start = torch.zeros(2, 1, dtype=torch.long)
    steps = ids(2 * n, 5, seed=2)
    shared, copied = KVCache(max_len=8), KVCache(max_len=8)
    index = [torch.tensor([2, 2, 0, 3, 5, 4]), torch.tensor([1, 0, 0, 5, 5, 5])]  # never leave a group
    with torch.no_grad():
        model(src, attention_mask=mask, decoder_input_ids=start, kv_cache=shared)
        shared.repeat(n)
        model(src.repeat_interleave(n, 0), attention_mask=mask.repeat_interleave(n, 0),
              decoder_input_ids=start.repeat_interleave(n, 0), kv_cache=copied)
        out = {"shared": [], "copied": []}
        for t in range(steps.shape[1]):
            for name, cache in (("shared", shared), ("copied", copied)):
                if t in (1, 3):
                    cache.reorder(index[t // 2])
                out[name].append(model(None, decoder_input_ids=steps[:, t:t + 1], kv_cache=cache).logits)
    assert shared.group == n and shared.cross[0][0].shape[0] == 2 and copied.cross[0][0].shape[0] == 2 * n
    torch.testing.assert_close(torch.cat(out["shared"], 1), torch.cat(out["copied"], 1), atol=1e-5, rtol=0)


def test_reorder_gathers_rows_without_aliasing():
    """Reorder writes into a spare buffer that the old one becomes: repeated reorders keep every row right."""
    cache = KVCache(max_len=6)
    k = torch.randn(4, 2, 3, 5)
    cache.update(0, k, -k)
    cache.update(1, 2 * k, -2 * k)
    cache.advance(3)
    expect = k.clone()
    for index in ([3, 3, 1, 0], [0, 2, 2, 1], [1, 1, 1, 1]):
        index = torch.tensor(index)
        cache.reorder(index)
        expect = expect[index]
        torch.testing.assert_close(cache.k[0][:, :, :3], expect, atol=0, rtol=0)
        torch.testing.assert_close(cache.v[1][:, :, :3], -2 * expect, atol=0, rtol=0)
    cache.reorder(torch.tensor([2, 0]))  # fewer rows
    torch.testing.assert_close(cache.k[1][:, :, :3], 2 * expect[[2, 0]], atol=0, rtol=0)
