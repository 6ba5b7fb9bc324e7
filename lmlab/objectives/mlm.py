"""Masked language modelling (BERT): corrupt a fraction of tokens, predict the originals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from lmlab.errors import ConfigError
from lmlab.objectives.base import IGNORE, Batch, Objective, required_id, token_loss

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


class WordStarts:
    """Whether each token begins a word, by the tokenizer's own normalizer and pre-tokenizer; any tokenizer kind.

    Whether token ``c`` begins a word depends on the token ``p`` before it (``ing`` continues ``runn`` but
    begins a word after ``-``; ``s`` continues ``'`` in GPT-2's pre-tokenizer). For a pair, ``c`` begins a word
    when the pre-tokenizer finds more words in ``decode([a, p, c])`` than in ``decode([a, p])`` (``a`` is a
    fixed letter token, so no text starts with the pair). Pairs are computed the first time they are seen and
    kept in a sorted table; a batch then costs one ``unique`` and one ``searchsorted``. No knowledge of
    WordPiece's ``##`` convention is used. Special tokens are words of their own.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer.tok
        self.V = tokenizer.vocab_size
        self.anchor = next((i for t in ("a", "e", "x", "▁a", "Ġa") if (i := tokenizer.token_to_id(t)) is not None),
                           None)
        if self.anchor is None:
            raise ConfigError("whole-word masking needs a single-letter token such as 'a' in the vocabulary")
        self.special = torch.zeros(self.V, dtype=torch.bool)
        self.special[torch.tensor(tokenizer.special_ids, dtype=torch.long)] = True
        self.codes = torch.empty(0, dtype=torch.long)  # sorted pair codes p * V + c seen so far
        self.values = torch.empty(0, dtype=torch.bool)

    def _count_words(self, texts: list[str]) -> list[int]:
        """Words in each text as the tokenizer's normalizer and pre-tokenizer see them (one Rust batch)."""
        # A byte-level token can hold part of a multi-byte character, which decodes as U+FFFD: count it as a
        # letter (what accented letters and CJK characters are), not as the symbol U+FFFD is.
        texts = [t.replace("\ufffd", "a") for t in texts]
        return [len({w for w in e.word_ids if w is not None})
                for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def _compute(self, codes: Tensor) -> Tensor:
        pairs = [(self.anchor, int(c) // self.V, int(c) % self.V) for c in codes]
        with_c = self._count_words(self.tok.decode_batch([list(p) for p in pairs], skip_special_tokens=False))
        without = self._count_words(self.tok.decode_batch([list(p[:2]) for p in pairs], skip_special_tokens=False))
        return torch.tensor([a > b for a, b in zip(with_c, without, strict=True)], dtype=torch.bool)

    def learn(self, tokens: np.ndarray, limit: int = 20_000_000) -> None:
        """Compute every pair of adjacent tokens in (the first ``limit`` of) ``tokens`` ahead of training."""
        t = torch.from_numpy(np.asarray(tokens[:limit], dtype=np.int64))
        self(t[:-1], t[1:])

    def __call__(self, prev: Tensor, cur: Tensor) -> Tensor:
        """(...) bool: whether ``cur`` begins a word after ``prev`` (same shapes, token ids)."""
        uniq, inverse = (prev * self.V + cur).unique(return_inverse=True)
        pos = torch.searchsorted(self.codes, uniq)
        known = pos < len(self.codes)
        known[known.clone()] = self.codes[pos[known]] == uniq[known]
        if not known.all():
            missing = uniq[~known]
            codes, order = torch.cat([self.codes, missing]).sort()
            self.codes, self.values = codes, torch.cat([self.values, self._compute(missing)])[order]
            pos = torch.searchsorted(self.codes, uniq)
        return self.values[pos][inverse] | self.special[prev] | self.special[cur]


class MaskedLM(Objective):
    """BERT's masked LM, optionally with whole-word masking.

    Each non-special token (or, with a :class:`WordStarts`, each word: all of its pieces) is chosen
    with probability ``mask_prob``; a chosen token becomes the mask token with probability
    ``mask_token_frac``, a random (non-special) token with probability ``random_token_frac``, and stays
    as it is otherwise. Only chosen tokens are scored, and the output projection is computed only at
    those positions (15% of the full logits by default). Packed documents do not attend to each other.
    """

    name = "mlm"
    archs = ("encoder", "decoder")  # a decoder runs bidirectionally for MLM
    extra_tokens = 0
    sparse_head = True

    def __init__(self, mask_id: int, special_ids: list[int], vocab_size: int, mask_prob: float = 0.15,
                 mask_token_frac: float = 0.8, random_token_frac: float = 0.1,
                 word_starts: WordStarts | None = None, document_mask: bool = True) -> None:
        self.mask_id = mask_id
        self.mask_prob = mask_prob
        self.mask_token_frac = mask_token_frac
        self.random_token_frac = random_token_frac
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[torch.tensor(sorted(special_ids), dtype=torch.long)] = True
        self.is_special = is_special
        self.replacements = (~is_special).nonzero().squeeze(1)  # ids a "random token" is drawn from
        self.word_starts = word_starts
        self.document_mask = document_mask

    def prepare(self, tokens: np.ndarray) -> None:
        if self.word_starts is not None:  # learn the corpus's word boundaries once, not batch by batch
            self.word_starts.learn(tokens)

    def word_ids(self, tokens: Tensor, segment_ids: Tensor) -> Tensor:
        """(B, T) the index of the word each token belongs to, counted from 0 in each row."""
        new = torch.ones_like(tokens, dtype=torch.bool)  # (B, T); a row's first token starts its first word
        new[:, 1:] = self.word_starts(tokens[:, :-1], tokens[:, 1:]) | (segment_ids[:, 1:] != segment_ids[:, :-1])
        return new.long().cumsum(dim=1) - 1

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        if self.word_starts is None:
            # One uniform draw per token decides both whether it is chosen and how it is corrupted.
            u = torch.rand(tokens.shape, generator=generator)  # (B, T)
            chosen = u < self.mask_prob
            kind = u / self.mask_prob
        else:  # one draw per word chooses; one per token decides the corruption
            u_word = torch.rand(tokens.shape, generator=generator)  # (B, T): enough for T words
            chosen = u_word.gather(1, self.word_ids(tokens, segment_ids)) < self.mask_prob
            kind = torch.rand(tokens.shape, generator=generator)
        chosen &= ~self.is_special[tokens]
        to_mask = chosen & (kind < self.mask_token_frac)
        to_random = chosen & ~to_mask & (kind < self.mask_token_frac + self.random_token_frac)
        random_ids = self.replacements[torch.randint(len(self.replacements), tokens.shape, generator=generator)]
        inputs = torch.where(to_mask, self.mask_id, torch.where(to_random, random_ids, tokens))
        targets = torch.where(chosen, tokens, IGNORE)
        return Batch(input_ids=inputs, targets=targets, segment_ids=segment_ids if self.document_mask else None)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        hidden = model.hidden(**batch.model_inputs(), causal=False)  # (B, T, D)
        scored = batch.targets != IGNORE
        return token_loss(model.logits(hidden[scored]), batch.targets[scored])  # (N, V): only where scored

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> MaskedLM:
        o = cfg.objective
        return cls(required_id(tokenizer, "mask"), list(tokenizer.special_ids), tokenizer.vocab_size, o.mask_prob,
                   o.mask_token_frac, o.random_token_frac, WordStarts(tokenizer) if o.whole_word else None,
                   o.document_mask)
