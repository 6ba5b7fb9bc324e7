"""T5 span corruption: T5's lengths, exact noise counts, sentinels in order, inputs + targets = original."""

from __future__ import annotations

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.objectives import IGNORE, SpanCorruption
from lmlab.objectives.span import random_spans_noise_mask, t5_lengths

SENTINELS = list(range(900, 1000))  # 100 sentinel ids, <extra_id_0> first
EOS, PAD, V = 1, 0, 1000


def _merge(inputs: list[int], targets: list[int]) -> list[int]:
    """Undo the corruption: put each sentinel's span from the targets back in the inputs."""
    spans, current = {}, None
    for t in targets[:-1]:  # drop EOS
        if t in SENTINELS:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(spans[t] if t in SENTINELS else [t])
    return out


def test_t5_input_and_target_lengths():
    # the values of T5's own compute_input_and_target_lengths for its standard settings
    assert t5_lengths(512, 0.15, 3.0) == (568, 512, 114)
    assert t5_lengths(256, 0.5, 3.0) == (382, 256, 256)  # at density 0.5, T5 makes both sides equal


def test_noise_counts_are_exact_and_span_lengths_vary():
    g = torch.Generator().manual_seed(0)
    noise = random_spans_noise_mask(2000, 568, 0.15, 3.0, g)  # (2000, 568)
    assert (noise.sum(1) == 85).all()  # round(568 * 0.15)
    starts = noise & ~torch.nn.functional.pad(noise[:, :-1], (1, 0))
    assert (starts.sum(1) == 28).all()  # round(85 / 3) spans in every row
    assert not noise[:, 0].any() and noise[:, -1].all()  # a non-noise span first, a noise span last
    density, mean_span = noise.float().mean().item(), noise.sum().item() / starts.sum().item()
    assert abs(density - 0.15) / 0.15 < 0.02 and abs(mean_span - 3.0) / 3.0 < 0.02
    # span lengths come from a random segmentation: many different lengths, spread around the mean
    lengths = torch.diff(torch.nonzero(torch.diff(noise[0].long(), prepend=torch.tensor([0]))).flatten())
    assert len(set(lengths.tolist())) > 1


def test_inputs_and_targets_merge_back_to_the_original():
    obj = SpanCorruption(128, SENTINELS, EOS, PAD, document_mask=False)
    g = torch.Generator().manual_seed(1)
    for seed in range(20):
        tokens = torch.randint(2, 900, (16, obj.raw_len), generator=torch.Generator().manual_seed(seed))
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        assert batch.input_ids.shape == (16, obj.encoder_len) and obj.encoder_len <= 128
        assert batch.targets.shape == batch.decoder_input_ids.shape == (16, obj.decoder_len)
        assert (batch.decoder_input_ids[:, 0] == PAD).all()
        assert torch.equal(batch.decoder_input_ids[:, 1:], batch.targets[:, :-1])
        for row in range(16):
            inputs, targets = batch.input_ids[row].tolist(), batch.targets[row].tolist()
            sentinels = [t for t in inputs if t in SENTINELS]
            assert sentinels == SENTINELS[:len(sentinels)]  # <extra_id_0>, <extra_id_1>, ... in order
            assert [t for t in targets if t in SENTINELS] == sentinels
            assert inputs[-1] == targets[-1] == EOS
            assert _merge(inputs, targets) == tokens[row].tolist()


def test_packed_documents_stay_apart():
    obj = SpanCorruption(64, SENTINELS, EOS, PAD)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(2, 900, (32, obj.raw_len), generator=g)
    segments = (torch.arange(obj.raw_len) >= obj.raw_len // 2).long().expand(32, -1)  # two documents per row
    batch = obj.make_batch(tokens, segments, g)
    assert batch.segment_ids.shape == batch.input_ids.shape
    assert batch.decoder_segment_ids.shape == batch.decoder_input_ids.shape
    # segments never decrease along a row, and every sentinel belongs to the document of its span
    assert (batch.segment_ids.diff(dim=1) >= 0).all() and (batch.decoder_segment_ids.diff(dim=1) >= 0).all()
    # a target is ignored exactly where it would be predicted from the other document
    ignored = batch.targets == IGNORE
    assert ignored.any() and (ignored.sum(1) <= 1).all()


def test_too_few_sentinels_is_a_config_error():
    with pytest.raises(ConfigError, match="--sentinels"):
        SpanCorruption(512, SENTINELS[:10], EOS, PAD)


def test_separators_are_never_noised_or_targets():
    """As T5 corrupts each document's text and appends EOS: the separators of packed rows are taken out first."""
    obj = SpanCorruption(64, SENTINELS, EOS, PAD, special_ids=[EOS, PAD, 2])
    assert obj.extra_tokens > t5_lengths(64, 0.15, 3.0)[0] - 64  # spare tokens for the separators it drops
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(5, 900, (64, 64 + obj.extra_tokens), generator=g)
    tokens[:, 10::13] = 2  # a separator every 13 tokens
    segments = (tokens == 2).long().cumsum(1)
    batch = obj.make_batch(tokens, segments, g)
    assert (batch.input_ids[:, :-1] != 2).all() and (batch.input_ids[:, -1] == EOS).all()
    assert (batch.targets != 2).all()
    plain = SpanCorruption(64, SENTINELS, EOS, PAD, document_mask=False, special_ids=[EOS, PAD, 2])
    b = plain.make_batch(tokens, segments, torch.Generator().manual_seed(5))
    for row in range(64):  # the row's ordinary tokens, in order, merge back
        ordinary = [t for t in tokens[row].tolist() if t != 2][:obj.raw_len]
        assert _merge(b.input_ids[row].tolist(), b.targets[row].tolist()) == ordinary
