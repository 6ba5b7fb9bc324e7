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

    After :meth:`repeat` (beams, several samples per input), ``group`` decoder rows share one input's cross
    keys and values: they are neither copied nor moved, and cross-attention reads them once per group.

    Buffers are allocated on first use with the batch size, heads and device of the keys, in the keys' dtype
    but on a CPU (:func:`cache_dtype`), where bfloat16 and float16 keys are held in float32: attention then runs
    in float32 (``F.scaled_dot_product_attention`` of one query over cached keys ran 3-9x as fast in float32 as
    in bfloat16 on the development CPU, torch 2.13), at twice the cache's bytes. The keys' values are kept
    exactly (a bfloat16 or float16 number is a float32 one).
    """

    def __init__(self, max_len: int) -> None:
        if max_len <= 0:
            raise ValueError(f"KVCache max_len must be positive, got {max_len}")
        self.max_len = max_len
        self.length = 0  # positions already cached
        self.k: list[Tensor] = []  # per layer (B, kvh, max_len, hs)
        self.v: list[Tensor] = []
        self.cross: list[tuple[Tensor, Tensor]] = []  # per layer (k, v), each (B / group, kvh, S, hs)
        self.cross_mask: Tensor | None = None  # (B / group, 1, 1, S) bool, or None for no encoder padding
        self.group = 1  # decoder rows per row of the cross entries
        self._spare: Tensor | None = None  # a free buffer the shape of one layer's, for reorder

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k``, ``v`` (B, kvh, T, hs) after the cached positions; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions needed, max_len is {self.max_len}")
        if layer == len(self.k):
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k.append(torch.zeros(shape, dtype=cache_dtype(k), device=k.device))
            self.v.append(torch.zeros(shape, dtype=cache_dtype(v), device=v.device))
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, kvh, length + T, hs)

    def add_cross(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Keep the next layer's cross-attention keys and values (B, kvh, S, hs), in the cache's dtype; return
        them as kept."""
        self.cross.append((k.to(cache_dtype(k)), v.to(cache_dtype(v))))
        return self.cross[-1]

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions as cached (the model calls this once per forward)."""
        self.length += n

    def repeat(self, n: int) -> None:
        """Make every row ``n`` adjacent rows (B,) -> (B * n,), sharing their input's cross entries."""
        self.k = [t.repeat_interleave(n, 0) for t in self.k]
        self.v = [t.repeat_interleave(n, 0) for t in self.v]
        self._spare = None
        if self.cross:
            self.group *= n

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (B',) in that order, e.g. the surviving beams of a beam search.

        With ``group > 1`` (after :meth:`repeat`) every row must stay among its input's rows, as beams do: the
        cross entries stay where they are. Each layer's rows are gathered into a spare buffer, which then
        takes the layer's place (one buffer's worth of extra memory, no allocation per step).
        """
        if self.k and index.shape[0] == self.k[0].shape[0]:
            self.k, self.v = [self._gather(t, index) for t in self.k], [self._gather(t, index) for t in self.v]
        else:  # the number of rows changes
            self.k = [t.index_select(0, index) for t in self.k]
            self.v = [t.index_select(0, index) for t in self.v]
            self._spare = None
        if self.group == 1:
            self.cross = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross]
            if self.cross_mask is not None:
                self.cross_mask = self.cross_mask.index_select(0, index)

    def _gather(self, t: Tensor, index: Tensor) -> Tensor:
        """Rows ``index`` of ``t`` written into the spare buffer; ``t`` becomes the spare."""
        out = self._spare if self._spare is not None and self._spare.shape == t.shape else torch.empty_like(t)
        torch.index_select(t.view(t.shape[0], -1), 0, index, out=out.view(t.shape[0], -1))  # 2-D: a fast copy
        self._spare = t
        return out


def cache_dtype(keys: Tensor) -> torch.dtype:
    """The dtype a :class:`KVCache` holds ``keys`` in: float32 for bfloat16 and float16 keys on a CPU (see the
    class), else their own."""
    reduced = keys.dtype in (torch.bfloat16, torch.float16) and keys.device.type == "cpu"
    return torch.float32 if reduced else keys.dtype
