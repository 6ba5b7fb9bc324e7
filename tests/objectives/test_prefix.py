"""Prefix LM, and span corruption on a decoder through a prefix-LM mask."""

from __future__ import annotations

import pytest
import torch

from lmlab.config import model_preset
from lmlab.model import build_model
from lmlab.objectives import IGNORE, UL2, PrefixLM, SpanCorruption

SENTINELS = list(range(900, 1000))


def test_split_per_row_and_loss_on_the_suffix_only():
    tokens = torch.randint(5, 100, (512, 33), generator=torch.Generator().manual_seed(0))
    batch = PrefixLM(document_mask=False).make_batch(tokens, torch.zeros_like(tokens), torch.Generator())
    prefix = batch.prefix_lengths
    assert prefix.min() >= 1 and prefix.max() <= 31 and len(prefix.unique()) > 20  # drawn per row
    scored = batch.targets != IGNORE
    first = scored.float().argmax(dim=1)
    assert torch.equal(first, prefix - 1) and torch.equal(scored.sum(1), 32 - prefix + 1)
    assert torch.equal(batch.targets[scored], tokens[:, 1:][scored])


def _prefix_lm_batch():
    tokens = torch.randint(5, 100, (4, 17), generator=torch.Generator().manual_seed(1))
    return PrefixLM(document_mask=False).make_batch(tokens, torch.zeros_like(tokens), torch.Generator())


def _span_batch():
    obj = SpanCorruption(12, SENTINELS, 1, 0, document_mask=False, decoder_only=True)
    tokens = torch.randint(5, 100, (4, obj.raw_len), generator=torch.Generator().manual_seed(1))
    return obj.make_batch(tokens, torch.zeros_like(tokens), torch.Generator())


def _ul2_batches():
    obj = UL2(16, SENTINELS, (10, 11, 12), 1, 0, 0, document_mask=False, decoder_only=True)
    tokens = torch.randint(20, 100, (4, obj.seq_len + obj.extra_tokens), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    return [obj.make_batch(tokens, torch.zeros_like(tokens), g) for _ in range(6)]  # R, X and S denoisers


@pytest.mark.parametrize("batches", [lambda: [_prefix_lm_batch()], lambda: [_span_batch()], _ul2_batches],
                         ids=["prefix_lm", "span", "ul2"])
def test_no_scored_position_sees_its_target(batches):
    """Change every input after a scored position: its logits must not move (no target leaks in)."""
    torch.manual_seed(0)
    model = build_model(model_preset("gpt2-tiny", vocab_size=1000)).eval()
    for batch in batches():
        with torch.no_grad():
            base = model(**batch.model_inputs()).logits
            for t in range(batch.input_ids.shape[1] - 1):
                later = batch.input_ids.clone()
                later[:, t + 1:] = 7
                out = model(**{**batch.model_inputs(), "input_ids": later}).logits
                scored = batch.targets[:, t] != IGNORE
                torch.testing.assert_close(out[scored, t], base[scored, t], rtol=0, atol=0)


def test_span_corruption_on_a_decoder_is_inputs_then_targets():
    enc_dec = SpanCorruption(64, SENTINELS, 1, 0, document_mask=False)
    dec = SpanCorruption(64, SENTINELS, 1, 0, document_mask=False, decoder_only=True)
    tokens = torch.randint(2, 900, (8, enc_dec.raw_len), generator=torch.Generator().manual_seed(2))
    a = enc_dec.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(3))
    b = dec.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(3))
    n = a.input_ids.shape[1]
    assert torch.equal(b.input_ids, torch.cat([a.input_ids, a.targets], dim=1)[:, :-1])
    assert (b.prefix_lengths == n).all()
    assert (b.targets[:, :n - 1] == IGNORE).all() and torch.equal(b.targets[:, n - 1:], a.targets)
