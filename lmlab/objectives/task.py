"""What the fine-tuning objectives (``seq2seq``, ``classify``) share: how an example becomes a row of tokens.

They train on examples (:class:`lmlab.data.examples.Examples`), not on windows of a token stream: each row is
one example, right-padded, with the special tokens the model's tokenizer puts around a text (its template,
e.g. BERT's ``[CLS] ... [SEP]`` or T5's ``... </s>``), an optional source prefix and truncation to the
configured lengths. The same formatting serves training, evaluation and the pipelines, so a model is always
used the way it was fine-tuned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lmlab.objectives.base import IGNORE, Batch, Objective, pad_batch

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


def template(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's own template puts before and after a single text (``[CLS]`` / ``[SEP]`` for
    BERT, nothing / ``</s>`` for T5, nothing for GPT-2 and lmlab's tokenizers)."""
    probe = "lmlab probe"
    plain = tokenizer.tok.encode(probe, add_special_tokens=False).ids
    full = tokenizer.tok.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


def causal_rows(rows: list[list[int]], scored: list[list[bool]], pad: int, packs: np.ndarray | None = None
                ) -> Batch:
    """A decoder's batch of next-token prediction on whole rows: each row's inputs are its ids but the last,
    its targets the ids after them, IGNORE where ``scored`` (one flag per id) is false and at the padding. What is
    scored goes by position, never by id, so a pad id equal to EOS never hides the EOS.

    With ``packs`` ((B,) ints), the rows with the same number share one row of the batch, one after the other,
    each its own segment (``segment_ids``: attention stays inside it and positions restart at 0); padding is a
    segment of its own, never scored.
    """
    inputs = [r[:-1] for r in rows]
    targets = [[t if s else IGNORE for t, s in zip(r[1:], flags[1:], strict=True)]
               for r, flags in zip(rows, scored, strict=True)]
    if packs is None:
        ids, mask = pad_batch(inputs, pad=pad)  # (B, L)
        tgt, _ = pad_batch(targets, pad=IGNORE)  # (B, L)
        return Batch(input_ids=ids, targets=tgt, attention_mask=mask)
    n = int(packs.max()) + 1
    packed: list[list[int]] = [[] for _ in range(n)]
    packed_targets: list[list[int]] = [[] for _ in range(n)]
    segments: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n  # examples in each packed row so far
    for row, x, t in zip(packs.tolist(), inputs, targets, strict=True):
        segments[row] += [count[row]] * len(x)
        count[row] += 1
        packed[row] += x
        packed_targets[row] += t
    ids, _ = pad_batch(packed, pad=pad)  # (R, L)
    tgt, _ = pad_batch(packed_targets, pad=IGNORE)  # (R, L)
    seg, _ = pad_batch(segments, pad=len(rows))  # (R, L); padding: a segment no example has
    return Batch(input_ids=ids, targets=tgt, segment_ids=seg)


class TaskObjective(Objective):
    """Base of the example-based objectives: the input row of an example and its length limits."""

    def __init__(self, tokenizer: Tokenizer, max_source: int, prefix: str = "", label_smoothing: float = 0.0
                 ) -> None:
        self.tokenizer = tokenizer
        self.max_source = max_source
        self.prefix = tokenizer.encode(prefix) if prefix else []
        self.label_smoothing = label_smoothing
        self.head, self.tail = template(tokenizer)
        self.pad = next(i for i in (tokenizer.pad_id, tokenizer.eos_id, 0) if i is not None)
        self.arch = ""  # set by attach()

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> TaskObjective:
        return cls(tokenizer, cfg.data.seq_len, cfg.objective.source_prefix, cfg.objective.label_smoothing,
                   **cls._options(cfg))

    @classmethod
    def _options(cls, cfg: Config) -> dict:
        return {}

    def attach(self, model: torch.nn.Module) -> None:
        self.arch = model.arch

    def _row(self, tokens: np.ndarray | list[int], head: list[int], tail: list[int]) -> list[int]:
        """``head + prefix + tokens + tail``, the tokens cut so the row holds at most ``max_source`` ids."""
        room = max(self.max_source - len(head) - len(self.prefix) - len(tail), 1)
        return [*head, *self.prefix, *np.asarray(tokens[:room]).tolist(), *tail]

    def source_room(self) -> int:
        """How many tokens of a source fit in a row (the rest is cut); what truncation is counted against."""
        extra = len(self.head) + len(self.prefix) + len(self.input_tail())
        return max(self.max_source - extra, 1)

    def input_tail(self) -> list[int]:
        """The ids after the source (the template's, or the objective's own where the template has none)."""
        return self.tail

    def input_ids(self, tokens: np.ndarray | list[int]) -> list[int]:
        """The model's input row for one source (or text to classify): what training, evaluation and the
        pipelines all feed the model (for a decoder, the prompt its output continues)."""
        return self._row(tokens, self.head, self.input_tail())

    def encode(self, text: str) -> list[int]:
        """:meth:`input_ids` of a text."""
        return self.input_ids(self.tokenizer.encode(text))
