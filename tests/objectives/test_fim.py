"""Fill-in-the-middle: PSM/SPM rearrangement at the configured rates, reversible to the exact document."""

from __future__ import annotations

import pytest
import torch

from lmlab.config import load_config
from lmlab.objectives import IGNORE, FillInTheMiddle, objective_tokenizer
from lmlab.objectives.fim import MIDDLE, PREFIX, SUFFIX, split_document

DOCS = ["def add(a, b):\n    return a + b", "Fill in the middle of this sentence, please.",
        "Ünïcödé 中文 and emoji 🎉 survive the cut at any character.", "x"]


@pytest.fixture(scope="module")
def fim_tokenizer(tokenizer):
    cfg = load_config(None, {"preset": "gpt2-tiny", "objective": {"name": "fim"}})
    return objective_tokenizer(cfg, tokenizer)


def _restore(tokenizer, ids: list[int]) -> str:
    """Undo PSM or SPM: the original document text."""
    p, m, s = (tokenizer.token_to_id(t) for t in (PREFIX, MIDDLE, SUFFIX))
    i_s, i_m = ids.index(s), ids.index(m)
    decode = lambda part: tokenizer.decode(part, skip_special_tokens=False)  # noqa: E731
    if i_s == 1:  # SPM: <pre> <suf> suffix <mid> prefix+middle
        return decode(ids[i_m + 1:]) + decode(ids[2:i_m])
    return decode(ids[1:i_s]) + decode(ids[i_m + 1:]) + decode(ids[i_s + 1:i_m])


def test_sentinels_are_added_once_with_new_ids(tokenizer, fim_tokenizer):
    assert fim_tokenizer.vocab_size == tokenizer.vocab_size + 3
    ids = [fim_tokenizer.token_to_id(t) for t in (PREFIX, MIDDLE, SUFFIX)]
    assert sorted(ids) == list(range(tokenizer.vocab_size, tokenizer.vocab_size + 3))
    assert set(ids) <= set(fim_tokenizer.special_ids)
    assert fim_tokenizer.encode("the quick fox") == tokenizer.encode("the quick fox")  # shards stay valid


def test_split_points_are_uniform_over_characters():
    g = torch.Generator().manual_seed(0)
    cuts = [len(split_document("abcdefghij", g)[0]) for _ in range(5000)]
    counts = torch.bincount(torch.tensor(cuts), minlength=11).float()
    # the smaller of two uniform draws over 0..10: P(k) = (2 * (10 - k) + 1) / 121
    expected = torch.tensor([(2 * (10 - k) + 1) / 121 for k in range(11)]) * 5000
    assert ((counts - expected).abs() / expected.sqrt()).max() < 4


def test_rearranged_documents_restore_exactly_at_the_configured_rates(fim_tokenizer):
    sep = fim_tokenizer.eos_id
    obj = FillInTheMiddle(fim_tokenizer, [sep], fim_tokenizer.pad_id, fim_rate=0.5, spm_rate=0.5)
    docs = [fim_tokenizer.encode(d) + [sep] for d in DOCS]
    row = [t for d in docs for t in d]
    segs = [i for i, d in enumerate(docs) for _ in d]
    T = len(row) + 3 * len(docs) + 8  # room for every sentinel and re-tokenization
    tokens = torch.tensor([row + [sep] * (T - len(row))] * 1)
    segments = torch.tensor([segs + [len(docs)] * (T - len(row))])
    g = torch.Generator().manual_seed(1)
    fim = spm = total = 0
    for _ in range(200):
        out, out_segs = obj.rearrange(tokens, segments, g)
        for d, text in enumerate(DOCS):
            ids = out[0][out_segs[0] == d].tolist()
            assert ids[-1] == sep
            ids = ids[:-1]
            total += 1
            if ids and ids[0] == fim_tokenizer.token_to_id(PREFIX):
                fim += 1
                spm += ids[1] == fim_tokenizer.token_to_id(SUFFIX)
                assert _restore(fim_tokenizer, ids) == text
            else:
                assert fim_tokenizer.decode(ids, skip_special_tokens=False) == text
    # SPM and PSM with an empty prefix look the same (<pre> <suf> ...): P(empty prefix) = 1 - (n / (n + 1))^2
    looks_spm = sum(0.5 + 0.5 * (1 - (len(t) / (len(t) + 1)) ** 2) for t in DOCS) / len(DOCS)
    assert abs(fim / total - 0.5) < 0.05 and abs(spm / fim - looks_spm) < 0.06


def test_long_rows_are_cut_and_short_rows_padded_without_targets(fim_tokenizer):
    sep = fim_tokenizer.eos_id
    obj = FillInTheMiddle(fim_tokenizer, [sep], fim_tokenizer.pad_id, fim_rate=1.0)
    ids = fim_tokenizer.encode(DOCS[1])
    tokens = torch.tensor([ids[:16]])
    batch = obj.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(0))
    assert batch.input_ids.shape == (1, 15) and batch.input_ids[0, 0] == fim_tokenizer.token_to_id(PREFIX)
    none = FillInTheMiddle(fim_tokenizer, [sep], fim_tokenizer.pad_id, fim_rate=0.0)
    assert torch.equal(none.make_batch(tokens, torch.zeros_like(tokens), torch.Generator()).input_ids,
                       tokens[:, :-1])
    # a row tokenized one character at a time re-tokenizes much shorter: the rest is padding, never a target
    chars = [t for c in "the quick brown fox jumps over the lazy dog" for t in fim_tokenizer.encode(c)]
    short = torch.tensor([chars + [sep]])
    b = obj.make_batch(short, torch.zeros_like(short), torch.Generator().manual_seed(0))
    pad = b.input_ids[0] == fim_tokenizer.pad_id
    assert pad[-5:].all() and (b.targets[0][pad[1:].nonzero().flatten()] == IGNORE).all()
    assert (b.targets[0][:5] != IGNORE).all()
    # padding is a segment of its own, which no document has (document 0 is the row's first)
    assert (b.segment_ids[0][pad] == -1).all() and (b.segment_ids[0][~pad] == 0).all()


def test_building_it_without_its_tokens_names_the_fix(tokenizer):
    from lmlab.errors import ConfigError
    from lmlab.objectives import build_objective

    for name, preset in (("fim", "gpt2-tiny"), ("ul2", "t5-tiny")):
        cfg = load_config(None, {"preset": preset, "objective": {"name": name}})
        with pytest.raises(ConfigError, match=r"needs its special tokens .*objective_tokenizer\(cfg, tokenizer\)"):
            build_objective(cfg, tokenizer)  # the shards' tokenizer, without <fim_prefix>... or [NLU]...
