"""Norms, activations and the MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.model.layers import MLP, activation_fn, make_norm


def test_norms():
    x = torch.randn(3, 8)
    ln = make_norm("layernorm", 8, 1e-5, bias=False)
    assert ln.bias is None
    torch.testing.assert_close(ln(x), F.layer_norm(x, (8,), eps=1e-5))
    rms = make_norm("rmsnorm", 8, 1e-6, bias=True)
    torch.testing.assert_close(rms(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu", "swiglu", "geglu"])
def test_mlp(activation):
    mlp = MLP(8, 12, activation, bias=True)
    gated = activation in ("swiglu", "geglu")
    assert mlp.up.weight.shape == ((24 if gated else 12), 8)
    x = torch.randn(2, 3, 8)
    h = mlp.up(x)
    if gated:
        gate, up = h.chunk(2, dim=-1)
        h = activation_fn(activation)(gate) * up
    else:
        h = activation_fn(activation)(h)
    torch.testing.assert_close(mlp(x), mlp.down(h))


def test_activation_functions():
    x = torch.randn(10)
    torch.testing.assert_close(activation_fn("gelu")(x), F.gelu(x))
    torch.testing.assert_close(activation_fn("geglu")(x), F.gelu(x, approximate="tanh"))  # T5's gelu_new
    torch.testing.assert_close(activation_fn("swiglu")(x), F.silu(x))
