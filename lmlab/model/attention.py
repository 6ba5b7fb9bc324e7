"""Multi-head attention through ``F.scaled_dot_product_attention``, and the masks it takes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.model.cache import KVCache
from lmlab.model.layers import Linear
from lmlab.model.positions import apply_rotary


def build_mask(q_len: int, k_len: int, *, causal: bool, offset: int = 0, key_padding: Tensor | None = None,
               q_segments: Tensor | None = None, k_segments: Tensor | None = None,
               self_attention: bool = True, prefix: Tensor | None = None,
               device: torch.device | None = None) -> Tensor | None:
    """A boolean mask (B or 1, 1, Tq, Tk), True where a query may attend a key; None if nothing is masked.

    Args:
        causal: query ``i`` (at absolute position ``offset + i``) sees keys ``<= offset + i``.
        key_padding: (B, Tk), 1/True for real keys, 0/False for padding.
        q_segments, k_segments: (B, Tq), (B, Tk) document ids; a query sees only keys of its own document.
        prefix: (B,) prefix LM on a causal mask: keys before ``prefix[b]`` are seen by every query of row ``b``.
        self_attention: queries are keys ``offset..offset+Tq-1``; each may always attend itself, so a
            padding query never has an empty row (which would give NaN). For cross-attention a row with
            no allowed key attends every key instead (its output is garbage, but finite).
    """
    mask = None

    def both(m: Tensor) -> Tensor:
        return m if mask is None else mask & m

    if causal and not (offset == k_len - 1 and q_len == 1):  # one new query sees everything cached
        q_idx = torch.arange(offset, offset + q_len, device=device)
        causal_mask = torch.arange(k_len, device=device)[None, :] <= q_idx[:, None]  # (Tq, Tk)
        if prefix is not None:
            causal_mask = causal_mask | (torch.arange(k_len, device=device) < prefix[:, None, None])  # (B, Tq, Tk)
            causal_mask = causal_mask[:, None]  # (B, 1, Tq, Tk)
        else:
            causal_mask = causal_mask[None, None]  # (1, 1, Tq, Tk)
        mask = both(causal_mask)
    if key_padding is not None:
        mask = both(key_padding.bool()[:, None, None, :])  # (B, 1, 1, Tk)
    if q_segments is not None and k_segments is not None:
        mask = both((q_segments[:, :, None] == k_segments[:, None, :])[:, None])  # (B, 1, Tq, Tk)
    if mask is None:
        return None
    if self_attention:
        q_idx = torch.arange(offset, offset + q_len, device=device)
        mask = mask | (torch.arange(k_len, device=device)[None, :] == q_idx[:, None])
    else:
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask


class Attention(nn.Module):
    """Multi-head (optionally grouped-query) attention.

    Self-attention uses one fused ``qkv`` Linear whose output is ``[q (nh*hs); k (kvh*hs); v (kvh*hs)]``;
    cross-attention has ``q`` and a fused ``kv`` (``[k; v]``) applied to the encoder output. ``o`` is the
    output projection. ``scale=None`` is the usual 1/sqrt(head_dim); T5 uses ``scale=1.0``.
    """

    def __init__(self, d_model: int, n_heads: int, kv_heads: int, head_dim: int, bias: bool,
                 dropout: float = 0.0, scale: float | None = None, cross: bool = False) -> None:
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = n_heads, kv_heads, head_dim
        self.dropout, self.scale, self.cross = dropout, scale, cross
        if cross:
            self.q = Linear(d_model, n_heads * head_dim, bias=bias)
            self.kv = Linear(d_model, 2 * kv_heads * head_dim, bias=bias)
        else:
            self.qkv = Linear(d_model, (n_heads + 2 * kv_heads) * head_dim, bias=bias)
        self.o = Linear(n_heads * head_dim, d_model, bias=bias)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, is_causal: bool = False,
                rope: tuple[Tensor, Tensor] | None = None, context: Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """Attend from ``x`` (B, T, D) to itself, or (cross) to ``context`` (B, S, D) or its cached K/V.

        ``mask`` is a boolean (True = attend) or additive float mask broadcastable to (B, nh, T, Tk).
        """
        B, T, _ = x.shape
        nh, kvh, hs = self.n_heads, self.kv_heads, self.head_dim
        if self.cross:
            q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
            if cache is not None and layer < len(cache.cross):
                k, v = cache.cross[layer]
                if cache.group > 1:  # the rows of a group (beams) share their input's keys: read them once
                    return self._grouped(q, k, v, mask, cache.group)
            else:
                S = context.shape[1]
                k, v = self.kv(context).view(B, S, 2, kvh, hs).permute(2, 0, 3, 1, 4)  # (B, kvh, S, hs) each
                if cache is not None:
                    k, v = cache.add_cross(k, v)
        else:
            heads = self.qkv(x).view(B, T, nh + 2 * kvh, hs).transpose(1, 2)  # (B, nh + 2 kvh, T, hs)
            q, k, v = heads.split([nh, kvh, kvh], dim=1)  # (B, nh, T, hs), (B, kvh, T, hs) x 2
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, kvh, length + T, hs)
        y = F.scaled_dot_product_attention(  # in the cache's dtype (float32 for bfloat16 on a CPU)
            q.to(k.dtype), k, v, attn_mask=_like(mask, k), dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None, scale=self.scale, enable_gqa=kvh != nh)  # (B, nh, T, hs)
        return self.o(y.to(x.dtype).transpose(1, 2).reshape(B, T, nh * hs))

    def _grouped(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, g: int) -> Tensor:
        """Cross-attention of ``q`` (B * g, nh, T, hs) where each ``g`` adjacent rows share one row of ``k``,
        ``v`` (B, kvh, S, hs) and of ``mask`` (B, 1, 1, S): the group's queries go into one row."""
        Bg, nh, T, hs = q.shape
        B = Bg // g
        q = q.reshape(B, g, nh, T, hs).transpose(1, 2).reshape(B, nh, g * T, hs)
        y = F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=_like(mask, k), scale=self.scale,
                                           enable_gqa=self.kv_heads != nh)  # (B, nh, g * T, hs)
        return self.o(y.to(q.dtype).view(B, nh, g, T, hs).permute(0, 2, 3, 1, 4).reshape(Bg, T, nh * hs))


def _like(mask: Tensor | None, keys: Tensor) -> Tensor | None:
    """An additive float ``mask`` in the dtype attention runs in (that of ``keys``); a boolean one as it is."""
    return mask.to(keys.dtype) if mask is not None and mask.is_floating_point() else mask
