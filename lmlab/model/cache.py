"""Key/value cache for fast incremental decoding."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of a decoder stack's self-attention, preallocated per layer to ``max_len`` positions.

    Pass the same object to successive ``model(..., kv_cache=cache)`` calls (under ``torch.no_grad()``):
    each call appends its tokens' keys and values, attends to everything cached, and positions continue
    from :attr:`length`. For encoder-decoder models the cross-attention keys and values of the encoder
    output are computed on the first call and kept in :attr:`cross` (later calls pass ``input_ids=None``),
    together with the encoder's padding mask in :attr:`cross_mask`.

    Buffers are allocated on first use with the batch size, heads, dtype and device of the keys.
    """

    def __init__(self, max_len: int) -> None:
        if max_len <= 0:
            raise ValueError(f"KVCache max_len must be positive, got {max_len}")
        self.max_len = max_len
        self.length = 0  # positions already cached
        self.k: list[Tensor] = []  # per layer (B, kvh, max_len, hs)
        self.v: list[Tensor] = []
        self.cross: list[tuple[Tensor, Tensor]] = []  # per layer (k, v), each (B, kvh, S, hs)
        self.cross_mask: Tensor | None = None  # (B, 1, 1, S) bool, or None for no encoder padding

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k``, ``v`` (B, kvh, T, hs) after the cached positions; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions needed, max_len is {self.max_len}")
        if layer == len(self.k):
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k.append(torch.zeros(shape, dtype=k.dtype, device=k.device))
            self.v.append(torch.zeros(shape, dtype=v.dtype, device=v.device))
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, kvh, length + T, hs)

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as cached (the model calls this once per forward)."""
        self.length += n

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (B',) in that order, e.g. the surviving beams of a beam search."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]
        self.cross = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross]
        if self.cross_mask is not None:
            self.cross_mask = self.cross_mask.index_select(0, index)
