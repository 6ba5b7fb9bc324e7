"""The objective interface: what every training objective provides.

An objective turns raw token sequences into a :class:`Batch` (deciding what is
corrupted, what the model sees and what it must predict) and scores the model
on that batch. It returns the *summed* loss and the number of scored targets;
the trainer divides, so gradient accumulation and data-parallel ranks average
correctly whatever the padding or masking.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer

IGNORE = -100  # target value of a position that is not scored


@dataclass
class Batch:
    """Model inputs and targets. Shapes: B sequences of T (encoder/decoder) or T_dec (decoder side) tokens."""

    input_ids: Tensor  # (B, T) long
    targets: Tensor  # (B, T) or (B, T_dec) long; IGNORE where not scored
    segment_ids: Tensor | None = None  # (B, T) document index in a packed row; attention stays inside one
    position_ids: Tensor | None = None  # (B, T) positions, restarting at 0 for each packed document
    attention_mask: Tensor | None = None  # (B, T) 1 for real tokens, 0 for padding
    decoder_input_ids: Tensor | None = None  # (B, T_dec) encoder-decoder objectives
    decoder_attention_mask: Tensor | None = None  # (B, T_dec)
    decoder_segment_ids: Tensor | None = None  # (B, T_dec) the document of each decoder position
    prefix_lengths: Tensor | None = None  # (B,) prefix LM: positions seen bidirectionally at the start of each row
    noise: Tensor | None = None  # uniform draws an objective makes in make_batch for use in loss (not a model input)
    reference: Tensor | None = None  # (B, 2) dpo: the reference model's log-probs of chosen and rejected (not an input)

    def to(self, device: torch.device | str) -> Batch:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=True)
                                for f in fields(self) if getattr(self, f.name) is not None})

    def rows(self, index: slice) -> Batch:
        """The sub-batch of rows ``index`` (a data-parallel rank's share of a global batch)."""
        return replace(self, **{f.name: getattr(self, f.name)[index]
                                for f in fields(self) if getattr(self, f.name) is not None})

    def model_inputs(self) -> dict[str, Tensor]:
        """Everything but the targets, as keyword arguments for the model's forward."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("targets", "noise", "reference") and getattr(self, f.name) is not None}

    def num_tokens(self) -> int:
        """Tokens the model processes (both sides for encoder-decoders): the unit of tokens/s."""
        n = self.input_ids.numel()
        return n + (self.decoder_input_ids.numel() if self.decoder_input_ids is not None else 0)


class Objective:
    """Base class. Subclasses set ``name`` and ``archs`` and implement :meth:`make_batch` and :meth:`loss`."""

    name: str = ""
    extra_tokens: int = 0  # the sampler draws data.seq_len + extra_tokens tokens per row
    archs: tuple[str, ...] = ()  # model architectures this objective can train
    sparse_head: bool = False  # the output head runs only at the scored positions (for MFU)
    special_tokens: tuple[str, ...] = ()  # tokens the objective adds to the tokenizer when it lacks them
    perplexity: bool = True  # the loss is a cross-entropy per predicted token, so exp(loss) is a perplexity
    chat: bool = False  # renders conversations: a tokenizer without a chat template gets the default (ChatML)

    def attach(self, model: torch.nn.Module) -> None:
        """Meet the model before training (an objective with modules of its own builds them here, e.g. ELECTRA's
        generator sharing the model's embeddings). Such an objective is also a ``torch.nn.Module``: the trainer
        optimizes and checkpoints its parameters beside the model's."""

    def prepare(self, tokens: np.ndarray) -> None:
        """Look once at the training tokens (a memory-mapped array) before training; most objectives need not."""

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> Objective:
        """Build the objective from the run configuration and the tokenizer's special tokens."""
        raise NotImplementedError

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        """Build a batch from packed token rows.

        Args:
            tokens: (B, T) long, documents packed back to back, each followed by a separator.
            segment_ids: (B, T) long, the document index of each token within its row.
            generator: the only source of randomness (its state is checkpointed).
        """
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Return ``(summed_loss, num_targets, metrics)``; metrics are sums too (e.g. correct predictions)."""
        raise NotImplementedError

    def num_targets(self, batch: Batch) -> int:
        """What the summed loss of ``batch`` is divided by, known before the forward pass: its scored targets (a
        preference objective: its pairs). The trainer divides by their sum over micro-batches and ranks."""
        return int((batch.targets != IGNORE).sum())

    def report(self, sums: dict[str, float], num_targets: float) -> dict[str, float]:
        """The values worth logging, from the ``metrics`` of :meth:`loss` summed over batches (and ranks) and the
        summed number of targets: by default the accuracy when ``loss`` counts ``correct`` predictions. The
        trainer logs them beside the loss (``val_`` + key at evaluations)."""
        return {"accuracy": sums["correct"] / max(num_targets, 1.0)} if "correct" in sums else {}

    def flops(self, model: torch.nn.Module, batch: Batch) -> float:
        """Training FLOPs (forward + backward, matmuls) of ``batch``: the model's
        :meth:`~lmlab.model.Transformer.flops_per_token` at the batch's own encoder and decoder lengths (which
        vary from batch to batch for UL2), with the output head at every position, or with ``sparse_head`` at
        the scored ones only. The trainer's MFU is their sum over time, against the peak."""
        decoder_len = batch.decoder_input_ids.shape[-1] if batch.decoder_input_ids is not None else None
        head = scored_share(batch) if self.sparse_head else 1.0  # (rows of T tokens: a pair is (2, T) for dpo)
        return batch.num_tokens() * model.flops_per_token(batch.input_ids.shape[-1], decoder_len, head_fraction=head)


def pad_batch(rows: list[list[int]], left: bool = False, pad: int = 0) -> tuple[Tensor, Tensor]:
    """Token rows as one (B, T) batch, padded on the left (decoder prompts) or the right, with ``pad`` (any id:
    it is masked out), and the (B, T) attention mask."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, cols], mask[i, cols] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def scored_share(batch: Batch) -> float:
    """The share of the target positions that are scored (not IGNORE)."""
    return int((batch.targets != IGNORE).sum()) / max(batch.targets.numel(), 1)


def token_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Summed cross-entropy of ``logits`` (..., V) against ``targets`` (...), IGNORE skipped; with the
    number of scored targets and the number predicted correctly."""
    flat, tgt = logits.flatten(0, -2).float(), targets.flatten()  # float32 (argmax on bf16 is 4x slower on CPU)
    loss = F.cross_entropy(flat, tgt, ignore_index=IGNORE, reduction="sum")
    scored = tgt != IGNORE
    return loss, scored.sum(), {"correct": ((flat.argmax(-1) == tgt) & scored).sum()}


def chunked_token_loss(model: torch.nn.Module, hidden: Tensor, targets: Tensor, chunk: int
                       ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """:func:`token_loss` of ``model.logits(hidden)`` without ever holding the [tokens x vocab] logits.

    Only scored positions get logits, ``chunk`` of them at a time; each chunk's head and cross-entropy are
    recomputed in the backward pass (activation checkpointing), so at most one chunk's logits exist at once.
    """
    scored = targets != IGNORE  # (B, T)
    h, t = hidden[scored], targets[scored]  # (N, D), (N,)

    def piece(h_i: Tensor, t_i: Tensor) -> tuple[Tensor, Tensor]:
        logits = model.logits(h_i).float()  # (chunk, V)
        return F.cross_entropy(logits, t_i, reduction="sum"), (logits.argmax(-1) == t_i).sum()

    loss, correct = hidden.new_zeros((), dtype=torch.float32), torch.zeros((), dtype=torch.long, device=h.device)
    for i in range(0, len(t), chunk):
        loss_i, correct_i = torch.utils.checkpoint.checkpoint(piece, h[i:i + chunk], t[i:i + chunk],
                                                              use_reentrant=False)
        loss, correct = loss + loss_i, correct + correct_i
    return loss, scored.sum(), {"correct": correct}


def required_id(tokenizer: Tokenizer, role: str) -> int:
    """The id of the tokenizer's ``role`` token (``"eos"``, ``"mask"``...), or a ConfigError saying it lacks one."""
    from lmlab.errors import ConfigError

    i = getattr(tokenizer, f"{role}_id")
    if i is None:
        raise ConfigError(f"this objective needs the tokenizer's {role} token, and it has none; train a tokenizer "
                          "with `lmlab tokenizer train`, which adds the usual special tokens")
    return i


def own_token_ids(tokenizer: Tokenizer, objective: str, tokens: tuple[str, ...]) -> list[int]:
    """The ids of the special tokens an objective adds (``Objective.special_tokens``), or a ConfigError saying how
    to add them when the tokenizer lacks them (the objective was built from Python on the shards' tokenizer)."""
    from lmlab.errors import ConfigError

    ids = [tokenizer.token_to_id(t) for t in tokens]
    if None in ids:
        missing = ", ".join(t for t, i in zip(tokens, ids, strict=True) if i is None)
        raise ConfigError(f"objective {objective!r} needs its special tokens ({missing}) in the tokenizer; build it "
                          "with the tokenizer `lmlab.objectives.objective_tokenizer(cfg, tokenizer)` returns, which "
                          "adds them at the end of the vocabulary (pretrain does this)")
    return ids


def decoder_start_id(tokenizer: Tokenizer, model: torch.nn.Module | None = None) -> int:
    """The token an encoder-decoder's decoder starts from: the one named by the Hugging Face checkpoint ``model``
    was imported from (:func:`imported_decoder_start`: EOS for BART), else pad as in T5, else bos, else eos."""
    if (start := imported_decoder_start(model)) is not None:
        return start
    for i in (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id):
        if i is not None:
            return i
    return required_id(tokenizer, "pad")


def imported_decoder_start(model: torch.nn.Module | None) -> int | None:
    """``decoder_start_token_id`` of the Hugging Face config.json ``model`` was imported from (``model.hf_config``,
    which lmlab checkpoints keep), or None: the token that checkpoint's decoder was trained to start from."""
    start = (getattr(model, "hf_config", None) or {}).get("decoder_start_token_id")
    return start if isinstance(start, int) else None
