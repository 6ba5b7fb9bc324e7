"""Small building blocks: norms, activations and the MLP."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

GATED = ("swiglu", "geglu")


def make_norm(kind: str, dim: int, eps: float, bias: bool) -> nn.Module:
    """LayerNorm (with or without bias) or RMSNorm (``F.rms_norm``, as Llama and T5 use it)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}")


def activation_fn(name: str):
    """The element-wise function of an activation; for gated ones, the function applied to the gate.

    ``geglu`` uses the tanh approximation of GELU, as T5 v1.1 (Hugging Face ``gelu_new``) does.
    """
    fns = {
        "gelu": F.gelu,
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu,
        "swiglu": F.silu,
        "geglu": lambda x: F.gelu(x, approximate="tanh"),
    }
    if name not in fns:
        raise ValueError(f"unknown activation {name!r}")
    return fns[name]


class Activation(nn.Module):
    """An activation as a module (for ``nn.Sequential`` heads)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = activation_fn(name)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class MLP(nn.Module):
    """Position-wise feed-forward: ``down(act(up(x)))``, or ``down(act(gate(x)) * up(x))`` when gated.

    For gated activations ``up`` is one fused Linear of width ``2 * d_ff`` whose output rows are
    ``[gate; up]`` (Llama's ``gate_proj`` then ``up_proj``; T5's ``wi_0`` then ``wi_1``).
    """

    def __init__(self, d_model: int, d_ff: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.gated = activation in GATED
        self.act = activation_fn(activation)
        self.up = nn.Linear(d_model, 2 * d_ff if self.gated else d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)  # (B, T, d_ff) or (B, T, 2 * d_ff)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.down(h)
