"""BART denoising: exact mask counts, Poisson span lengths, sentence permutation, the original as target."""

from __future__ import annotations

import torch

from lmlab.objectives import IGNORE, BartDenoising
from lmlab.objectives.bart import infill_spans

MASK, PAD, SEP, DOT, V = 4, 0, 3, 7, 200


def _obj(**kw):
    return BartDenoising(MASK, PAD, PAD, [0, 1, 2, 3, 4], [DOT], V, **kw)


def test_spans_are_exact_and_poisson():
    g = torch.Generator().manual_seed(0)
    lengths = []
    for _ in range(2000):
        spans = infill_spans(128, 38, 3.0, g)  # (K, 2)
        assert spans[:, 1].sum() == 38
        ends = spans[:, 0] + spans[:, 1]
        assert (spans[1:, 0] > ends[:-1]).all() and ends[-1] <= 128  # apart, inside the row
        lengths.append(spans[:-1, 1])  # the last span is cut to fit
    lengths = torch.cat(lengths).float()
    # Poisson(3): mean = variance = 3. Drawing until the lengths reach the budget makes the span that crosses it
    # (left out here) longer than average, so the others come out slightly short (about 3%).
    assert abs(lengths.mean().item() - 3.0) / 3.0 < 0.05 and abs(lengths.var().item() - 3.0) / 3.0 < 0.05
    assert (lengths == 0).any()  # zero-length spans: insertions


def test_one_mask_per_span_and_the_rest_kept_in_order():
    obj = _obj(permute_sentences=False, document_mask=False)
    g = torch.Generator().manual_seed(1)
    for seed in range(200):
        tokens = torch.randint(5, V, (1, 64), generator=torch.Generator().manual_seed(seed))
        state = g.get_state()
        spans = infill_spans(64, round(0.3 * 64), 3.0, torch.Generator().manual_seed(0).set_state(state))
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        inputs = batch.input_ids[0][batch.attention_mask[0].bool()]
        assert (inputs == MASK).sum() == len(spans)
        kept = inputs[inputs != MASK]
        assert len(kept) == 64 - round(0.3 * 64)
        it = iter(tokens[0].tolist())
        assert all(t in it for t in kept.tolist())  # an ordered subsequence of the original
        assert torch.equal(batch.targets, tokens)
        assert torch.equal(batch.decoder_input_ids[:, 1:], tokens[:, :-1]) and batch.decoder_input_ids[0, 0] == PAD


def test_special_tokens_are_never_masked_and_documents_stay_apart():
    obj = _obj()
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(5, V, (64, 48), generator=g)
    tokens[:, 23] = SEP
    segments = (torch.arange(48) > 23).long().expand(64, -1).contiguous()
    batch = obj.make_batch(tokens, segments, g)
    assert ((batch.input_ids == SEP).sum(1) == 1).all()
    real = batch.attention_mask.bool()
    assert (batch.segment_ids[real].reshape(-1) >= 0).all() and (batch.segment_ids[~real] == -1).all()
    # the separator is not scored, nor the second document's first token (predicted from the first document)
    assert (batch.targets == IGNORE).sum(1).eq(2).all() and (batch.targets[:, 23] == IGNORE).all()


def test_sentence_permutation_shuffles_whole_sentences_within_documents():
    obj = _obj()
    g = torch.Generator().manual_seed(3)
    # sentences of 4 tokens: three word tokens and a full stop; two documents of 5 sentences
    words = torch.arange(100, 140).view(10, 4)
    words[:, 3] = DOT
    tokens = words.flatten()[None].repeat(32, 1)
    segments = (torch.arange(40) >= 20).long().expand(32, -1).contiguous()
    out = obj.permute(tokens, segments, g)
    moved = 0
    for row in out:
        sentences = [tuple(s) for s in row.view(10, 4).tolist()]
        assert sorted(sentences[:5]) == sorted(tuple(s) for s in words[:5].tolist())  # document 1 stays first
        assert sorted(sentences[5:]) == sorted(tuple(s) for s in words[5:].tolist())
        moved += sentences != [tuple(s) for s in words.tolist()]
    assert moved > 25


def test_sentence_permutation_keeps_each_separator_last_in_its_document():
    # as fairseq's permute_sentences: only sentences move; the separator that closes a document stays its last token
    obj = _obj()
    g = torch.Generator().manual_seed(4)
    words = torch.arange(100, 130).view(10, 3)
    words[:, 2] = DOT  # sentences of three tokens, ending in a full stop
    doc = torch.cat([words[:5].flatten(), torch.tensor([SEP])])  # 16 tokens: 5 sentences, then the separator
    tokens = torch.cat([doc, doc + 0])[None].repeat(64, 1)  # (64, 32) two documents per row
    segments = (torch.arange(32) >= 16).long().expand(64, -1).contiguous()
    out = obj.permute(tokens, segments, g)
    assert (out[:, 15] == SEP).all() and (out[:, 31] == SEP).all()
    assert ((out == SEP).sum(1) == 2).all()
    for row in out:  # still whole sentences, shuffled
        assert sorted(tuple(s) for s in row[:15].view(5, 3).tolist()) == sorted(tuple(s) for s in words[:5].tolist())
    assert (out[:, :15] != tokens[:, :15]).any(1).float().mean() > 0.5


def test_a_mask_ratio_that_masks_nothing_is_a_config_error(tokenizer):
    import pytest

    from lmlab.config import load_config
    from lmlab.errors import ConfigError
    from lmlab.objectives import build_objective

    cfg = load_config(None, {"preset": "t5-tiny", "data": {"seq_len": 32},
                             "objective": {"name": "bart", "bart_mask_ratio": 0.01}})
    with pytest.raises(ConfigError, match="bart_mask_ratio 0.01 masks no token .* at least 0.0156"):
        build_objective(cfg, tokenizer)
    cfg = load_config(None, {"preset": "t5-tiny", "data": {"seq_len": 32},
                             "objective": {"name": "bart", "bart_mask_ratio": 0.02}})  # rounds to one token: fine
    obj = build_objective(cfg, tokenizer)
    tokens = torch.randint(5, 200, (2, 32))
    assert (obj.make_batch(tokens, torch.zeros_like(tokens), torch.Generator()).input_ids == obj.mask_id).any()
