"""Tests of lmlab.data.Sampler: shapes, determinism, resume, rank slicing, segment ids, eval batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmlab.data import Manifest, Sampler, SplitInfo, TokenDataset
from lmlab.errors import DataError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def train(shards, tokenizer):
    return TokenDataset.open(shards, "train", tokenizer)


def test_shapes_and_values(train):
    tokens, segments = Sampler(train, 32, 4, gen()).sample()
    assert tokens.shape == segments.shape == (4, 32)
    assert tokens.dtype == segments.dtype == torch.int64
    assert int(tokens.max()) < train.manifest.vocab_size
    assert (segments[:, 0] == 0).all() and (segments.diff(dim=1) >= 0).all()


def test_windows_are_slices_of_the_stream(train):
    s = Sampler(train, 16, 3, gen(5))
    starts = torch.randint(0, s.num_starts, (3,), generator=gen(5)).numpy()
    tokens, _ = s.sample()
    for row, start in zip(tokens, starts, strict=True):
        np.testing.assert_array_equal(row.numpy(), train.tokens[start:start + 16])


def test_determinism_and_resume(train):
    a = Sampler(train, 24, 4, gen(1))
    b = Sampler(train, 24, 4, gen(1))
    for _ in range(3):
        assert all(torch.equal(x, y) for x, y in zip(a.next(), b.next(), strict=True))
    state = a.state_dict()
    expected = [a.sample() for _ in range(3)]
    resumed = Sampler(train, 24, 4, gen(999))
    resumed.load_state_dict(state)
    for want, (t, s) in zip(expected, (next(resumed) for _ in range(3)), strict=True):
        assert torch.equal(want[0], t) and torch.equal(want[1], s)
    other_seed = Sampler(train, 24, 4, gen(2)).sample()[0]
    assert not torch.equal(other_seed, Sampler(train, 24, 4, gen(1)).sample()[0])


def test_rank_slices_equal_the_global_batch(train):
    whole = Sampler(train, 20, 6, gen(3))
    ranks = [Sampler(train, 20, 2, gen(3), rank=r, world_size=3) for r in range(3)]
    for _ in range(2):
        tokens, segments = whole.sample()
        parts = [s.sample() for s in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), tokens)
        assert torch.equal(torch.cat([p[1] for p in parts]), segments)
    evals = [list(s.eval_batches(2)) for s in ranks]
    for i, (tokens, _) in enumerate(whole.eval_batches(2)):
        assert torch.equal(torch.cat([e[i][0] for e in evals]), tokens)


def _hand_made(tmp_path, stream: list[int], offsets: list[int]) -> TokenDataset:
    (tmp_path / "train").mkdir()
    np.asarray(stream, dtype="<u2").tofile(tmp_path / "train" / "tokens_000.bin")
    np.save(tmp_path / "train" / "doc_offsets.npy", np.asarray(offsets, dtype=np.int64))
    Manifest(dtype="<u2", vocab_size=100, tokenizer_fingerprint="x", separator_id=3,
             splits={"train": SplitInfo(docs=len(offsets) - 1, tokens=len(stream))},
             source="hand").write(tmp_path)
    return TokenDataset.open(tmp_path, "train")


def test_segment_ids_on_a_hand_made_stream(tmp_path):
    # documents: [10 11 3] [12 3] [13 14 15 3] [16 3]  (3 is the separator, closing its document)
    ds = _hand_made(tmp_path, [10, 11, 3, 12, 3, 13, 14, 15, 3, 16, 3], [0, 3, 5, 9, 11])
    s = Sampler(ds, 6, 1, gen())
    tokens, segments = s.windows(np.array([0, 1, 2, 5]))
    assert tokens.tolist() == [[10, 11, 3, 12, 3, 13], [11, 3, 12, 3, 13, 14], [3, 12, 3, 13, 14, 15],
                               [13, 14, 15, 3, 16, 3]]
    assert segments.tolist() == [[0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 2, 2],
                                 [0, 0, 0, 0, 1, 1]]


def test_eval_batches_fixed(train):
    s = Sampler(train, 32, 4, gen())
    state = s.generator.get_state()
    first, second = list(s.eval_batches(3)), list(s.eval_batches(3))
    assert len(first) == 3
    for (t1, s1), (t2, s2) in zip(first, second, strict=True):
        assert t1.shape == (4, 32) and torch.equal(t1, t2) and torch.equal(s1, s2)
    assert torch.equal(s.generator.get_state(), state)  # evaluation does not move the training stream
    assert not torch.equal(first[0][0], first[1][0])


def test_too_small_split(shards, train):
    val = TokenDataset.open(shards, "val")
    with pytest.raises(DataError, match="too few for sequences"):
        Sampler(val, val.num_tokens, 2, gen())
    Sampler(val, val.num_tokens - 1, 2, gen()).sample()
    assert json.loads((shards / "manifest.json").read_text())["splits"]["val"]["tokens"] == val.num_tokens
