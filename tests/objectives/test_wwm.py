"""Whole-word masking with any tokenizer: words come from the tokenizer's pre-tokenization."""

from __future__ import annotations

import pytest
import torch

from lmlab.objectives import IGNORE, MaskedLM
from lmlab.objectives.mlm import WordStarts
from lmlab.tokenizer import train_tokenizer

TEXTS = ["The tokenizer's pre-tokenization decides, unambiguously, where words begin.",
         "Überraschend lange Wörter wie Donaudampfschifffahrt zerfallen in viele Stücke.",
         "internationalization and counterrevolutionaries are long; so is pneumonoultramicroscopic.",
         "混合 text: 中文分词的例子, café au lait (x=42) and 3.14159!"]


@pytest.fixture(scope="module", params=["bpe", "wordpiece", "unigram"])
def tok(request, docs):
    return train_tokenizer(docs + TEXTS * 3, kind=request.param, vocab_size=300)


def test_words_match_the_tokenizers_own_word_ids(tok):
    obj = MaskedLM(tok.mask_id, tok.special_ids, tok.vocab_size, word_starts=WordStarts(tok))
    for text in TEXTS:
        enc = tok.tok.encode(text, add_special_tokens=False)
        ids = torch.tensor([enc.ids])
        ours = obj.word_ids(ids, torch.zeros_like(ids))[0]
        assert ours.tolist() == [w - enc.word_ids[0] for w in enc.word_ids], text


def test_whole_word_masking_never_masks_part_of_a_word(tok):
    obj = MaskedLM(tok.mask_id, tok.special_ids, tok.vocab_size, mask_prob=0.3, word_starts=WordStarts(tok))
    rows = [tok.encode(t) for t in TEXTS]
    T = min(map(len, rows))
    tokens = torch.tensor([r[:T] for r in rows])  # (3, T)
    words = obj.word_ids(tokens, torch.zeros_like(tokens))
    g = torch.Generator().manual_seed(0)
    total = chosen_total = 0
    for _ in range(300):
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        chosen = batch.targets != IGNORE
        for row in range(tokens.shape[0]):
            for w in words[row].unique():
                in_word = words[row] == w
                assert chosen[row][in_word].all() or not chosen[row][in_word].any()
        total += tokens.numel()
        chosen_total += chosen.sum().item()
    assert abs(chosen_total / total - 0.3) < 0.03  # whole words at the configured rate
