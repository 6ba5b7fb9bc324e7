"""The Linear layer and its decode layout, norms, activations and the MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lmlab.model.layers as layers
from lmlab.model.layers import (
    DECODE_ROWS,
    FBGEMM,
    MLP,
    Linear,
    activation_fn,
    decode_layout,
    inference_layout,
    make_norm,
)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("d_in, d_out, chunks", [
    (384, 257, {1: 1, 2: 2, 3: 3}),  # 2 or 3 chunks of 192 or 128 input rows
    (1536, 96, {1: 1, 2: 2, 3: 3}),  # deeper than wide (an MLP's down projection)
    (256, 96, {1: 1, 2: 2, 3: 2}),  # 256 rows make 2 chunks of 128, not 3 equal ones
    (257, 96, {1: 1, 2: 1, 3: 1}),  # 257 rows divide into no equal chunks: one
    (96, 96, {1: 1, 2: 1, 3: 1}),  # chunks of 48 or 32 rows would be too small: one
])
def test_linear_decode_layout_matches_float64(threads, bias, d_in, d_out, chunks):
    """Inside decode_layout, inputs of up to DECODE_ROWS rows go through the chunked copy, the chunks' partial
    products summed; larger inputs through F.linear. Both equal a float64 product."""
    torch.manual_seed(0)
    layer = Linear(d_in, d_out, bias=bias)
    keys = set(layer.state_dict())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad(), decode_layout(layer):
            c = chunks[threads]
            assert layer.decode_weight.shape == (c, d_in // c, d_out) and layer.decode_weight.is_contiguous()
            for n in [(1,), (1, 1), (3, 1), (DECODE_ROWS,), (DECODE_ROWS + 1,), (2, 40)]:
                x = torch.randn(*n, d_in)
                ref = x.double() @ layer.weight.double().T + (layer.bias.double() if bias else 0)
                y = layer(x)
                assert y.shape == (*n, d_out)
                torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)
    assert layer.decode_weight is None and set(layer.state_dict()) == keys


def test_decode_layout_leaves_autograd_to_the_parameters():
    layer = Linear(8, 4)
    x = torch.randn(2, 8)
    with decode_layout(layer):
        layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.ones(4, 1) * x.sum(0))


def test_decode_layout_is_released_on_error_and_skips_other_dtypes():
    layer, half = Linear(8, 4), Linear(8, 4).to(torch.bfloat16)
    with pytest.raises(RuntimeError), decode_layout(layer, half, None):
        assert layer.decode_weight is not None and half.decode_weight is None
        raise RuntimeError("stop")
    assert layer.decode_weight is None


def _kernel_available(kernel: str) -> bool:
    """Whether ``pack_bf16`` would choose ``kernel`` on some CPU of this kind: fbgemm on x86, oneDNN's bfloat16
    where the CPU has bf16 instructions (elsewhere oneDNN may not run a bf16 product at all)."""
    from lmlab.train.precision import has_native_bf16

    if kernel == "fp16":
        return FBGEMM
    return layers.ONEDNN and bool(has_native_bf16())


@pytest.mark.parametrize("kernel", ["onednn", "fp16"])
@pytest.mark.parametrize("bias", [True, False])
def test_bf16_weights_packed_for_decoding_keep_their_values(monkeypatch, kernel, bias):
    """inference_layout packs a bfloat16 weight for oneDNN (bfloat16 products) or fbgemm (float16 weights, float32
    products): the product of any number of rows is the float64 product of the bfloat16 weight (its values carried
    exactly) within the kernel's rounding; the parameter keeps its shape and dtype but holds no data (NaN); a
    weight shared with an embedding keeps bfloat16, and so does one beyond float16's range for fbgemm."""
    if not _kernel_available(kernel):
        pytest.skip(f"PyTorch has no {kernel} kernel on this machine")
    monkeypatch.setattr(layers, "bf16_kernel", lambda: kernel)
    torch.manual_seed(0)
    layer, tied, big = (Linear(96, 40, bias=bias).to(torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        big.weight[0, 0] = 7e4
    weights = {name: m.weight.detach().clone() for name, m in (("layer", layer), ("tied", tied), ("big", big))}
    assert inference_layout(layer, tied, big, shared=(tied.weight,)) == (2 if kernel == "onednn" else 1)
    assert layer.packed is not None and tied.packed is None and (big.packed is None) == (kernel == "fp16")
    assert layer.weight.shape == (40, 96) and layer.weight.dtype == torch.bfloat16
    assert layer.weight.untyped_storage().nbytes() == 2 and bool(layer.weight.isnan().all())
    torch.testing.assert_close(tied.weight, weights["tied"], rtol=0, atol=0)
    for n in [(1,), (3, 1), (2, 70)]:
        x = torch.randn(*n, 96).to(torch.bfloat16)
        ref = x.double() @ weights["layer"].double().T + (layer.bias.double() if bias else 0)
        y = layer(x)
        assert y.dtype == torch.bfloat16 and y.shape == (*n, 40)
        torch.testing.assert_close(y.double(), ref.to(torch.bfloat16).double(), rtol=1e-2, atol=1e-2)
        if kernel == "fp16":  # float32 sums of exact weights: the float64 product to float32's rounding
            torch.testing.assert_close(layers._fp16_product(x.reshape(-1, 96), layer.packed[1]),
                                       ref.reshape(-1, 40).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not layers.ONEDNN, reason="PyTorch has no oneDNN here")
@pytest.mark.parametrize("bias", [True, False])
def test_float32_decoding_of_many_rows_takes_onednn_packed_weights(bias):
    """From ONEDNN_ROWS rows a step, decode_layout packs a float32 weight for oneDNN for the duration (fewer rows
    take the chunked copy), and inference_layout for good, but a weight shared with an embedding: the products
    equal a float64 one; autograd still reaches the parameters inside the layout."""
    torch.manual_seed(0)
    layer = Linear(384, 257, bias=bias)
    keys = set(layer.state_dict())
    with torch.no_grad(), decode_layout(layer, rows=layers.ONEDNN_ROWS):
        assert layer.packed is not None and layer.decode_weight is None
        for n in [(1,), (layers.ONEDNN_ROWS,), (2, 70)]:
            x = torch.randn(*n, 384)
            ref = x.double() @ layer.weight.double().T + (layer.bias.double() if bias else 0)
            torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)
    assert layer.packed is None and set(layer.state_dict()) == keys
    with torch.no_grad(), decode_layout(layer, rows=layers.ONEDNN_ROWS - 1):
        assert layer.packed is None and layer.decode_weight is not None
    x = torch.randn(8, 384)
    with decode_layout(layer, rows=8):
        layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.ones(257, 1) * x.sum(0))
    weight, tied = layer.weight.detach().clone(), Linear(384, 96)
    assert inference_layout(layer, tied, shared=(tied.weight,), rows=8) == 2
    assert layer.packed is not None and bool(layer.weight.isnan().all()) and tied.packed is None
    assert tied.decode_weight is not None  # the chunked view, which the embedding can read
    x = torch.randn(3, 384)
    ref = x.double() @ weight.double().T + (layer.bias.double() if bias else 0)
    with torch.no_grad():
        torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)


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
