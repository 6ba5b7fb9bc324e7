"""LoRA: low-rank adapters on the projections of a block, the base weights frozen.

A :class:`LoRA` hangs on a :class:`~lmlab.model.layers.Linear` (``linear.lora``) and adds
``(alpha / r) * B A x`` to its output, ``A`` (r, in) drawn Kaiming-uniform and ``B`` (out, r) zero, as PEFT
initialises them: a model with fresh adapters computes what its base does. A fused Linear (``qkv``, the gated
MLP's ``[gate; up]``) is several projections; it is split into *parts* along its output, and each adapted part has
its own ``A`` and ``B``, so that the parts match other libraries' layers one for one (Llama's q_proj, k_proj,
v_proj), or a single part covers the whole Linear where their layer is fused too (GPT-2's c_attn). Which parts
there are is the caller's choice (:func:`projections` gives each Linear's projections by name).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.model.layers import Linear

Part = tuple[str, int, bool]  # (name, output rows, adapted)


class LoRA(nn.Module):
    """The adapters of one Linear: ``parts`` split its output rows in order; an adapted part ``p`` adds
    ``scale * B[p] A[p] dropout(x)`` to its rows, the others add nothing."""

    def __init__(self, in_features: int, parts: list[Part], r: int, alpha: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.parts, self.r, self.scale = list(parts), r, alpha / r
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.A = nn.ParameterDict({name: nn.Parameter(torch.empty(r, in_features)) for name, _, on in parts if on})
        self.B = nn.ParameterDict({name: nn.Parameter(torch.zeros(n, r)) for name, n, on in parts if on})
        for a in self.A.values():  # PEFT's (and nn.Linear's) init of lora_A
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(x)
        outs = [F.linear(F.linear(h, self.A[name]), self.B[name]) if on else x.new_zeros(*x.shape[:-1], n)
                for name, n, on in self.parts]  # (..., n) each
        return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)) * self.scale  # (..., out)

    def delta(self) -> Tensor:
        """The change of the Linear's weight, ``scale * B A`` per part: (out, in)."""
        rows = [self.B[name] @ self.A[name] if on else self.B.new_zeros(n, self.in_features)
                for name, n, on in self.parts]
        return torch.cat(rows, dim=0) * self.scale

    @property
    def in_features(self) -> int:
        return next(iter(self.A.values())).shape[1]

    def extra_repr(self) -> str:
        return f"r={self.r}, scale={self.scale:g}, parts={[name for name, _, on in self.parts if on]}"


def projections(model: nn.Module) -> dict[str, list[tuple[str, int]]]:
    """Every Linear of every block by its parameter path (``decoder.layers.0.attn.qkv``), with the projections it
    holds in output order: ``[("q", rows), ("k", rows), ("v", rows)]`` for a fused ``qkv``, ``[("k", ..),
    ("v", ..)]`` for cross-attention's ``kv``, ``[("gate", ..), ("up", ..)]`` for a gated MLP's ``up``, else one."""
    from lmlab.model.attention import Attention
    from lmlab.model.layers import MLP

    out: dict[str, list[tuple[str, int]]] = {}
    for path, m in model.named_modules():
        if isinstance(m, Attention):
            q, kv = m.n_heads * m.head_dim, m.kv_heads * m.head_dim
            if m.cross:
                out[f"{path}.q"], out[f"{path}.kv"] = [("q", q)], [("k", kv), ("v", kv)]
            else:
                out[f"{path}.qkv"] = [("q", q), ("k", kv), ("v", kv)]
            out[f"{path}.o"] = [("o", m.o.out_features)]
        elif isinstance(m, MLP):
            n = m.down.in_features
            out[f"{path}.up"] = [("gate", n), ("up", n)] if m.gated else [("up", n)]
            out[f"{path}.down"] = [("down", m.down.out_features)]
    return out


def add_adapters(model: nn.Module, parts: dict[str, list[Part]], r: int, alpha: float, dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> int:
    """Give each Linear named in ``parts`` (by path, as :func:`projections` names them) adapters on its adapted
    parts, in the order of ``parts``; a Linear with no adapted part gets none. Returns the adapted Linears."""
    n = 0
    for path, spec in parts.items():
        linear = model.get_submodule(path)
        assert isinstance(linear, Linear) and sum(rows for _, rows, _ in spec) == linear.out_features, path
        if any(on for _, _, on in spec):
            linear.lora = LoRA(linear.in_features, spec, r, alpha, dropout, generator).to(linear.weight.device)
            n += 1
    return n


def adapted(model: nn.Module) -> dict[str, Linear]:
    """The Linears of ``model`` that have adapters, by path."""
    return {path: m for path, m in model.named_modules() if isinstance(m, Linear) and m.lora is not None}


@torch.no_grad()
def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter into its Linear's weight (``W += scale * B A``) and remove it: the model then computes
    the same without adapters. Returns the number of Linears merged."""
    layers = adapted(model)
    for linear in layers.values():
        linear.weight += linear.lora.delta().to(linear.weight.dtype)
        linear.lora = None
    return len(layers)
