"""Deterministic, resumable sampling of packed token windows from a :class:`TokenDataset`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lmlab.data.shards import TokenDataset
from lmlab.errors import DataError


class Sampler:
    """Draws batches of ``seq_len``-token windows at random positions of the concatenated token stream.

    Windows cross document boundaries (documents are packed); ``segment_ids`` tell the documents apart.
    The only state is the caller's ``generator``: checkpoint its state (or :meth:`state_dict`) and a
    resumed run draws exactly the same batches.

    For data parallelism every rank draws the *global* batch (``batch_size * world_size`` windows) from
    an identically seeded generator and keeps rows ``[rank * batch_size, (rank + 1) * batch_size)``, so
    a run on 2 processes sees exactly what 1 process with twice the batch sees.
    """

    def __init__(self, dataset: TokenDataset, seq_len: int, batch_size: int, generator: torch.Generator,
                 rank: int = 0, world_size: int = 1) -> None:
        """Set up sampling from ``dataset``.

        Raises:
            DataError: the split holds fewer than ``seq_len + 1`` tokens.
            ValueError: non-positive sizes or a rank outside ``[0, world_size)`` (a programming error).
        """
        if seq_len < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler sizes: seq_len={seq_len}, batch_size={batch_size}, rank={rank}, "
                             f"world_size={world_size}")
        if dataset.num_tokens < seq_len + 1:
            raise DataError(f"the {dataset.split} split has {dataset.num_tokens} tokens, too few for "
                            f"sequences of {seq_len}; use a larger corpus (or prepare --valid-size) or a smaller "
                            "data.seq_len")
        self.dataset = dataset
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.generator = generator
        self.rank = rank
        self.world_size = world_size
        self._offsets = np.arange(seq_len, dtype=np.int64)

    @property
    def num_starts(self) -> int:
        """How many distinct windows there are: start positions 0 .. N - seq_len."""
        return self.dataset.num_tokens - self.seq_len + 1

    def windows(self, starts: np.ndarray) -> tuple[Tensor, Tensor]:
        """Tokens and segment ids of the windows beginning at ``starts`` ((B,) int64).

        Returns:
            ``tokens`` (B, T) int64 and ``segment_ids`` (B, T) int64: the document index of each token
            counted from 0 at the row's first (possibly partial) document; a separator belongs to the
            document it ends.
        """
        pos = starts[:, None] + self._offsets  # (B, T) positions in the stream
        tokens = self.dataset.tokens[pos].astype(np.int64)  # fancy indexing reads only these pages
        # Document i covers [offsets[i], offsets[i+1]); "right" maps a start offset to its own document.
        doc = np.searchsorted(self.dataset.doc_offsets, pos, side="right")  # (B, T)
        segments = doc - doc[:, :1]
        return torch.from_numpy(tokens), torch.from_numpy(segments.astype(np.int64))

    def sample(self) -> tuple[Tensor, Tensor]:
        """The next batch: ``tokens`` (B, T) int64 and ``segment_ids`` (B, T) int64 of this rank."""
        n = self.batch_size * self.world_size  # the global batch, the same on every rank
        starts = torch.randint(0, self.num_starts, (n,), generator=self.generator)
        mine = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return self.windows(mine.numpy())

    def next(self) -> tuple[Tensor, Tensor]:
        """Same as :meth:`sample`."""
        return self.sample()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        return self.sample()

    def eval_batches(self, n_batches: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``n_batches`` fixed batches for validation: evenly spaced windows, the same at every call.

        The generator is not touched. With several ranks, each takes its slice of every global batch.
        """
        total = n_batches * self.batch_size * self.world_size
        starts = np.linspace(0, self.num_starts - 1, num=max(total, 1)).round().astype(np.int64)
        starts = starts.reshape(n_batches, self.world_size, self.batch_size)[:, self.rank]  # (n, B)
        for row in starts:
            yield self.windows(row)

    def checkpoint_state(self) -> dict[str, Any]:
        """What a training checkpoint records besides the generator (saved with the run's generators): nothing."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """The counterpart of :meth:`checkpoint_state` (the generator is restored with the run's generators)."""

    def state_dict(self) -> dict[str, Any]:
        """``{"generator": state}``: all there is to resume sampling."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
