"""Position information: ids for packed rows, rotary embeddings (RoPE) and T5's relative position bias."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def positions_from_segments(segment_ids: Tensor) -> Tensor:
    """Positions that restart at 0 wherever the segment id changes along a row.

    Args:
        segment_ids: (B, T) document index of each token in a packed row.
    Returns:
        (B, T) long positions, e.g. segments ``[0, 0, 0, 1, 1]`` give ``[0, 1, 2, 0, 1]``.
    """
    B, T = segment_ids.shape
    idx = torch.arange(T, device=segment_ids.device).expand(B, T)  # (B, T)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    # index of the most recent segment start at or before each token
    start_idx = torch.where(starts, idx, 0).cummax(dim=1).values  # (B, T)
    return idx - start_idx


def positions_from_tokens(ids: Tensor, pad_id: int, start: int = 0) -> Tensor:
    """Positions that count only the tokens that are not ``pad_id`` (RoBERTa); padding gets -1.

    Args:
        ids: (B, T) token ids.
        pad_id: the padding token's id.
        start: positions already used (a KV cache's length).
    Returns:
        (B, T) long positions, e.g. ``[a, b, PAD, c]`` gives ``[0, 1, -1, 2]``. With a table offset of
        ``pad_id + 1`` this is Hugging Face's ``create_position_ids_from_input_ids``.
    """
    real = (ids != pad_id).long()  # (B, T)
    return (real.cumsum(dim=1) + start) * real - 1


class Rotary(nn.Module):
    """Rotary position embedding (RoPE) tables in Llama's rotate-half convention.

    ``forward(positions)`` gives ``(cos, sin)``, each (B or 1, T, head_dim), computed from the
    positions themselves, so any length and any restart pattern (packed documents) works.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(None), persistent=False)  # (hs/2,)

    def _inv_freq(self, device: torch.device | None) -> Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim
        return 1.0 / (self.theta ** exponents)

    def _apply(self, fn, recurse: bool = True):
        # the frequencies stay float32 and exact whatever the model is converted to (bfloat16 weights would round
        # them by up to 2^-9, an angle error of radians a thousand positions on) or allocated by (``to_empty``)
        super()._apply(fn, recurse)
        self.inv_freq = self._inv_freq(self.inv_freq.device)
        return self

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[..., None] * self.inv_freq  # (B, T, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, hs)
        return emb.cos(), emb.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (B, nh, T, hs) by ``cos``/``sin`` (B, T, hs): ``x * cos + rotate_half(x) * sin``."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (B, 1, T, hs)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def relative_bucket(relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucketing of ``key_pos - query_pos``: exact when small, logarithmic up to ``max_distance``."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        relative = relative.abs()
    else:
        relative = -relative.clamp(max=0)  # only the past is distinguishable
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = max_exact + (torch.log(relative.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, relative, large)


class RelativePositionBias(nn.Module):
    """A learned scalar per (bucket of relative distance, head), added to attention scores (T5).

    One instance serves every layer of a stack (T5 computes it in the first layer and reuses it).
    """

    def __init__(self, n_heads: int, num_buckets: int, max_distance: int, bidirectional: bool) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.emb = nn.Embedding(num_buckets, n_heads)

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        """Bias (B or 1, nh, Tq, Tk) from query positions (B or 1, Tq) and key positions (B or 1, Tk)."""
        relative = k_pos[:, None, :] - q_pos[:, :, None]  # (B, Tq, Tk)
        bucket = relative_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return self.emb(bucket).permute(0, 3, 1, 2)  # (B, nh, Tq, Tk)
