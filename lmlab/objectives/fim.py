"""Fill-in-the-middle (Bavarian et al. 2022): causal LM on documents cut in three and reordered.

With probability ``fim_rate`` a document's text is cut at two uniformly random character positions into
prefix, middle and suffix, each piece re-tokenized, and the document rearranged so that the model learns
to write the middle after seeing both sides:

    PSM  <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM  <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle    (with probability ``fim_spm_rate``)

The three sentinel tokens are added to the tokenizer when it lacks them. Other documents are left as
they are; everything is then trained with causal LM (document boundaries respected as in ``clm``). A
rearranged row is longer by the sentinels (and by any re-tokenization difference): it is cut to length,
or padded with ignored targets when shorter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmlab.objectives.base import IGNORE, Batch, own_token_ids
from lmlab.objectives.clm import CausalLM

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer

PREFIX, MIDDLE, SUFFIX = "<fim_prefix>", "<fim_middle>", "<fim_suffix>"


def fim_sequence(prefix: list[int], middle: list[int], suffix: list[int], sentinels: tuple[int, int, int],
                 spm: bool) -> list[int]:
    """The pieces of a document rearranged (``sentinels``: the ids of ``<fim_prefix>``, ``<fim_middle>``,
    ``<fim_suffix>``), PSM or SPM as in the module docstring. With an empty ``middle`` it is the prompt that asks a
    model for the middle (:func:`lmlab.infer.infill.infill`)."""
    p, m, s = sentinels
    return [p, s, *suffix, m, *prefix, *middle] if spm else [p, *prefix, s, *suffix, m, *middle]


def separator_ids(tokenizer: Tokenizer) -> list[int]:
    """The tokens that can close a document in the shards (``lmlab prepare`` puts the eos token, ``[SEP]`` for
    WordPiece): what follows a middle."""
    return [i for i in (tokenizer.eos_id, tokenizer.sep_id) if i is not None]


def split_document(text: str, generator: torch.Generator) -> tuple[str, str, str]:
    """Prefix, middle and suffix of ``text`` cut at two uniformly random character positions."""
    a, b = torch.randint(0, len(text) + 1, (2,), generator=generator).sort().values.tolist()
    return text[:a], text[a:b], text[b:]


class FillInTheMiddle(CausalLM):
    """Fill-in-the-middle on a decoder: PSM/SPM rearrangement of a share of the documents, then causal LM."""

    name = "fim"
    archs = ("decoder",)
    special_tokens = (PREFIX, MIDDLE, SUFFIX)

    def __init__(self, tokenizer: Tokenizer, separator_ids: list[int], pad_id: int, fim_rate: float = 0.5,
                 spm_rate: float = 0.5, document_mask: bool = True, loss_chunk: int = 0) -> None:
        super().__init__(document_mask=document_mask, loss_chunk=loss_chunk)
        self.tokenizer = tokenizer
        self.sentinels = tuple(tokenizer.token_to_id(t) for t in self.special_tokens)  # (prefix, middle, suffix)
        self.separators = torch.tensor(separator_ids, dtype=torch.long)
        self.pad_id = pad_id
        self.fim_rate, self.spm_rate = fim_rate, spm_rate

    def rearrange(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """FIM-transform the documents of each row; returns new ``(tokens, segment_ids)`` of the same shape,
        and marks padding with segment id -1."""
        B, T = tokens.shape
        rows: list[list[tuple[int, list[int]]]] = []  # per row: (segment, tokens) per document
        texts, jobs = [], []  # documents chosen for FIM: their texts and (row, document, spm)
        choose = torch.rand(B, T, generator=generator)  # one draw per document (indexed by segment)
        spm = torch.rand(B, T, generator=generator)
        for r in range(B):
            segs = segment_ids[r]
            bounds = torch.cat([torch.tensor([0]), (segs.diff() != 0).nonzero().flatten() + 1, torch.tensor([T])])
            docs = []
            for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                doc = tokens[r, start:end].tolist()
                s = int(segs[start])
                if choose[r, s] < self.fim_rate:
                    body = doc[:-1] if doc and doc[-1] in self.separators else doc  # the separator stays last
                    texts.append(self.tokenizer.decode(body, skip_special_tokens=False))
                    jobs.append((r, len(docs), bool(spm[r, s] < self.spm_rate), doc[len(body):]))
                docs.append((s, doc))
            rows.append(docs)
        pieces = [split_document(t, generator) for t in texts]
        encoded = self.tokenizer.encode_batch([p for three in pieces for p in three])
        for j, (r, i, is_spm, tail) in enumerate(jobs):
            pre, mid, suf = encoded[3 * j:3 * j + 3]
            rows[r][i] = (rows[r][i][0], fim_sequence(pre, mid, suf, self.sentinels, is_spm) + tail)
        out = torch.full((B, T), self.pad_id, dtype=torch.long)
        out_segs = torch.full((B, T), -1, dtype=torch.long)
        for r, docs in enumerate(rows):
            flat = torch.tensor([t for _, doc in docs for t in doc][:T], dtype=torch.long)
            seg = torch.tensor([s for s, doc in docs for _ in doc][:T], dtype=torch.long)
            out[r, :len(flat)], out_segs[r, :len(seg)] = flat, seg
        return out, out_segs

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        tokens, segments = self.rearrange(tokens, segment_ids, generator)
        # padding keeps segment -1, which no document has: it is neither attended to nor attends a document
        batch = super().make_batch(tokens, segments, generator)
        batch.targets[segments[:, 1:] < 0] = IGNORE  # padding is never a target
        return batch

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> FillInTheMiddle:
        o = cfg.objective
        separators = separator_ids(tokenizer)
        pad = tokenizer.pad_id if tokenizer.pad_id is not None else separators[0]
        own_token_ids(tokenizer, cls.name, cls.special_tokens)
        return cls(tokenizer, separators, pad, o.fim_rate, o.fim_spm_rate, o.document_mask, o.loss_chunk)
