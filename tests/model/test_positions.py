"""Positions: restarts in packed rows, rotary embeddings, T5 relative buckets."""

from __future__ import annotations

import pytest
import torch

from lmlab.model import positions_from_segments
from lmlab.model.positions import RelativePositionBias, Rotary, apply_rotary, relative_bucket


def test_positions_restart_at_each_segment():
    seg = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert positions_from_segments(seg).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


def test_rotary_scores_depend_only_on_distance():
    rot = Rotary(8, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        cq, sq = rot(torch.tensor([[i]]))
        ck, sk = rot(torch.tensor([[j]]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_rotary_frequencies_stay_float32_in_a_bf16_model():
    """Converting a model to bfloat16 (weights to run) or allocating it empty keeps the rotary frequencies exact
    in float32: rounded to bfloat16 they would turn the angles by radians a thousand positions on."""
    reference = Rotary(64, 10000.0).inv_freq.double()
    exact = 1.0 / 10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    torch.testing.assert_close(reference, exact, rtol=1e-7, atol=0)
    converted = Rotary(64, 10000.0).to(torch.bfloat16)
    with torch.device("meta"):
        empty = Rotary(64, 10000.0)
    for rot in (converted, empty.to_empty(device="cpu")):
        assert rot.inv_freq.dtype == torch.float32 and torch.equal(rot.inv_freq.double(), reference)
    cos, _ = converted(torch.tensor([[1000]]))
    torch.testing.assert_close(cos[0, 0].double(), torch.cat([exact, exact]).mul(1000).cos(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_t5(bidirectional):
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-300, 300)[None]
    ref = t5.T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32,
                                                   max_distance=128)
    assert torch.equal(relative_bucket(rel, bidirectional, 32, 128), ref)


def test_relative_bias_shape():
    bias = RelativePositionBias(n_heads=3, num_buckets=8, max_distance=16, bidirectional=True)
    assert bias(torch.arange(5)[None], torch.arange(7)[None]).shape == (1, 3, 5, 7)
