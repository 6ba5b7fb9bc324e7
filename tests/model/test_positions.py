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
