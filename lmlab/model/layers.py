"""Small building blocks: the Linear layer, norms, activations and the MLP."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from lmlab.model.quant import FBGEMM, int8_linear

GATED = ("swiglu", "geglu")
DECODE_ROWS = 64  # inputs of at most this many rows take the decode layout (measured faster up to 64 on 2 cores)


class Linear(nn.Linear):
    """``nn.Linear``, with a second weight layout for the few-row products of incremental decoding.

    A decoding step multiplies one row per sequence by every weight matrix; on a CPU that is a matrix-vector
    product bound by memory bandwidth, and MKL's GEMV on ``nn.Linear``'s (out, in) weight runs on one core.
    Inside :func:`decode_layout` the layer keeps ``decode_weight``, a copy of the weight transposed and split
    by input rows into one chunk per thread, (chunks, in / chunks, out), and multiplies inputs of at most
    ``DECODE_ROWS`` rows by it with one batched matmul (``baddbmm``, the bias in chunk 0), which spreads the
    chunks over the cores; the chunks' partial products are then summed. Only the order of the additions
    changes. Steps of more rows, bfloat16 weights and int8-dynamic ones take ``packed`` instead: the weight
    packed for one of PyTorch's CPU kernels (:func:`pack_onednn`, :func:`pack_bf16`, ``lmlab.model.quant``).
    The copies are used only where autograd is off (they hold no gradient); parameters, state dict and
    gradients are those of ``nn.Linear``.
    """

    decode_weight: Tensor | None = None  # (chunks, in / chunks, out) while decoding
    decode_bias: Tensor | None = None  # (chunks, 1, out): the bias in chunk 0 (zeros without one), then zeros
    packed: tuple | None = None  # (product, packed weight): pack_onednn, pack_bf16, int8-dynamic

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lora = None  # LoRA adapters (lmlab.model.lora), whose output is added to the layer's

    def forward(self, x: Tensor) -> Tensor:
        y = self._product(x)
        return y if self.lora is None else y + self.lora(x)

    def _product(self, x: Tensor) -> Tensor:
        if self.packed is not None and not (self.weight.requires_grad and torch.is_grad_enabled()):
            # a weight packed for one of PyTorch's CPU kernels (pack_onednn, pack_bf16, int8-dynamic)
            product, weight = self.packed
            y = product(x.reshape(-1, self.in_features), weight)
            return y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        if self.weight.dtype == torch.int8:  # quantized for inference (lmlab.model.quant)
            return int8_linear(x, self.weight, self.scale, self.bias)
        w = self.decode_weight
        if w is None or x.numel() > DECODE_ROWS * self.in_features or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        rows = x.reshape(-1, w.shape[0], w.shape[1]).transpose(0, 1)  # (chunks, M, in / chunks)
        y = torch.baddbmm(self.decode_bias, rows, w)  # (chunks, M, out) partial products
        return (y.sum(0) if w.shape[0] > 1 else y[0]).view(*x.shape[:-1], self.out_features)


@contextmanager
def decode_layout(*modules: nn.Module | None, rows: int = 1) -> Iterator[None]:
    """Give every :class:`Linear` in ``modules`` its decode layout for the duration (CPU float32 weights only:
    elsewhere the usual product is already fast; and whole weights only, not the shards of FSDP, which gathers
    them at each call): for decoding steps of ``rows`` rows (batch x beams), the chunked copy below
    :data:`ONEDNN_ROWS`, oneDNN's packed copy from it (:func:`pack_onednn`). The copies double those weights'
    memory until the exit. Layers that already have a layout for good (:func:`inference_layout`) keep it."""
    layers = [m for m in _decodable(modules) if m.decode_weight is None and m.packed is None]
    onednn = ONEDNN and rows >= ONEDNN_ROWS
    try:
        for layer in layers:
            if onednn:
                pack_onednn(layer, rows, keep_weight=True)
            else:
                _pack(layer, _transposed(layer.weight.detach()))
        yield
    finally:
        for layer in layers:
            layer.decode_weight = layer.decode_bias = layer.packed = None


def inference_layout(*modules: nn.Module | None, shared: tuple[Tensor, ...] = (), rows: int = 1) -> int:
    """Give every :class:`Linear` in ``modules`` a decode layout for good, *in place of* ``nn.Linear``'s, so the
    model holds each weight once and nothing is packed per call. Returns the number of layers laid out.

    - float32 weights on a CPU, for decoding steps of ``rows`` rows (batch x beams): below :data:`ONEDNN_ROWS`,
      the weight parameter becomes a (out, in) view of the (in, out) decode weight (:func:`decode_layout` then
      has nothing to pack); products of many rows use the view (the same GEMM, transposed operand), so results
      are those of the plain layout up to the order of additions in decoding, and a weight tied to an embedding
      is changed for both (the lookup reads rows of the view). From :data:`ONEDNN_ROWS` on, oneDNN's packed
      layout (:func:`pack_onednn`), but for the weights in ``shared``, which take the view.
    - bfloat16 weights on an x86 CPU: packed for oneDNN or fbgemm (:func:`pack_bf16`, :func:`bf16_kernel`),
      except weights in ``shared`` (a head tied to the embedding, whose lookup needs the rows).

    For inference only: the layout is chosen for this process's thread count and CPU, and the model is not
    meant to be trained or saved."""
    skip = {id(t) for t in shared}
    layers = [m for m in _decodable(modules) if m.decode_weight is None and m.packed is None]
    packed = 0
    if ONEDNN and rows >= ONEDNN_ROWS:
        for layer in [m for m in layers if id(m.weight) not in skip]:
            pack_onednn(layer, rows)
            return_freed_memory()  # the float32 weight's
            packed += 1
        layers = [m for m in layers if id(m.weight) in skip]
    with torch.no_grad():
        for layer in layers:
            layer.weight.data = _transposed(layer.weight.detach()).t()  # the tied embedding follows (same Parameter)
            _pack(layer, layer.weight.data.t())
    half = {id(m): m for module in modules if module is not None for m in module.modules()
            if isinstance(m, Linear) and m.packed is None and m.weight.device.type == "cpu"
            and m.weight.dtype == torch.bfloat16 and id(m.weight) not in skip}
    kernel = bf16_kernel() if half else None
    for layer in half.values() if kernel else ():
        packed += pack_bf16(layer, kernel, rows)
        return_freed_memory()  # the bfloat16 weight's: the model never holds both layouts
    return len(layers) + packed


ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
# float32 decoding steps of at least this many rows take oneDNN's packed layout, fewer the chunked one (1B-class
# decoder, 2 cores, AVX-512: one row 11 against 9 tokens/s, eight rows 34 against 65; beam search 4 x 32 of the
# benchmarks' T5-like model: 12.0 against 17.9 sentences/s)
ONEDNN_ROWS = 4
FP16_MAX = torch.finfo(torch.float16).max


def bf16_kernel() -> str | None:
    """The product :func:`pack_bf16` gives bfloat16 weights on this CPU: ``"onednn"`` where the CPU has bfloat16
    instructions (AVX-512 BF16 or AMX) and PyTorch has oneDNN, else ``"fp16"`` where fbgemm is built (x86), else
    None (the plain ``F.linear``)."""
    from lmlab.train.precision import has_native_bf16

    if ONEDNN and has_native_bf16():
        return "onednn"
    return "fp16" if FBGEMM else None


def _onednn_product(x: Tensor, packed: tuple[Tensor, Tensor | None, torch.dtype]) -> Tensor:
    weight, bias, dtype = packed
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), weight, bias, "none", [], "")


def pack_onednn(layer: Linear, rows: int = 1, keep_weight: bool = False) -> None:
    """Hold ``layer``'s weight (float32 or bfloat16) in oneDNN's blocked layout for products of about ``rows``
    rows (``mkldnn._reorder_linear_weight``, multiplied by ``mkldnn._linear_pointwise``, as ``torch.compile``
    freezes a Linear on a CPU). Unless ``keep_weight``, the weight parameter keeps its shape and dtype
    (``num_params``, ``device``) as a single NaN broadcast to it, so that a product which missed the packed
    weight cannot pass unnoticed."""
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach()
    packed = (torch.ops.mkldnn._reorder_linear_weight(weight, rows), bias, weight.dtype)
    hold_packed(layer, _onednn_product, packed, like=None if keep_weight else weight)


def hold_packed(layer: Linear, product, packed: object, like: Tensor | None) -> None:
    """Give ``layer`` its ``packed`` weight and the ``product`` that multiplies by it; unless ``like`` is None,
    the weight parameter becomes ``like``'s shape and dtype (``num_params``, ``device``, the bytes a step reads)
    holding a single value broadcast to it, NaN where it is a float, so that a product which missed the packed
    weight cannot pass unnoticed."""
    layer.packed = (product, packed)
    if like is not None:
        fill = float("nan") if like.is_floating_point() else 0
        layer.weight = nn.Parameter(like.new_full((), fill).expand(like.shape), requires_grad=False)


def _fp16_product(x: Tensor, packed: object) -> Tensor:
    return torch.ops.quantized.linear_dynamic_fp16(x.float(), packed)


def pack_bf16(layer: Linear, kernel: str, rows: int = 1) -> bool:
    """Hold ``layer``'s bfloat16 weight packed for one of PyTorch's CPU kernels, in the same two bytes a weight,
    whose matrix-vector product reads it at about the memory's speed where ``F.linear``'s bfloat16 GEMV reaches
    half of it (measured on 2 cores, AVX-512 BF16, 1B-class shapes: 41-45 GB/s and 35-43 GB/s against 21-27):

    - ``"onednn"``: oneDNN's blocked layout (``mkldnn._reorder_linear_weight``, multiplied by
      ``mkldnn._linear_pointwise``, as ``torch.compile`` freezes a bfloat16 Linear on a CPU): the same bfloat16
      product, also faster than ``F.linear`` for many rows.
    - ``"fp16"``: fbgemm's packed float16 (``linear_prepack_fp16`` / ``linear_dynamic_fp16``, float32 activations
      and sums), for CPUs without bfloat16 instructions, where a bfloat16 product is emulated. A bfloat16 value is
      a float16 value exactly from 2^-14 (float16's smallest normal) to float16's largest; below 2^-17 it is
      rounded to float16's subnormal step, 2^-24, far below the weights' own rounding. A weight with a value
      beyond float16's range keeps bfloat16 (returns False). Twice slower than oneDNN's bfloat16 for hundreds of
      rows (a long prompt, scoring) on a CPU that has bfloat16 instructions, which is why it is not used there.

    The weight parameter keeps its shape and dtype (``num_params``, ``device``) as a single NaN broadcast to it, so
    that a product which missed the packed weight cannot pass unnoticed."""
    weight = layer.weight.detach()
    if kernel == "onednn":
        pack_onednn(layer, rows)
        return True
    if kernel != "fp16" or weight.abs().max() > FP16_MAX:
        return False
    bias = None if layer.bias is None else layer.bias.detach().float()
    hold_packed(layer, _fp16_product, torch.ops.quantized.linear_prepack_fp16(weight.float(), bias), like=weight)
    return True


def _decodable(modules: tuple[nn.Module | None, ...]) -> list[Linear]:
    """The :class:`Linear` layers of ``modules`` that the decode layout serves, each once."""
    found = {id(m): m for module in modules if module is not None for m in module.modules()
             if isinstance(m, Linear) and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32
             and not isinstance(m.weight, DTensor)}
    return list(found.values())


def _pack(layer: Linear, transposed: Tensor) -> None:
    """Set ``layer``'s decode weight from its weight ``transposed`` (in, out), and its decode bias."""
    # a chunk per thread, of at least 64 rows that divide ``in`` (on 2 cores, chunks of 64 rows or more read as
    # fast as 2 chunks; on one thread: the plain (in, out) transpose, which MKL's GEMV also reads faster than
    # (out, in))
    d_in = layer.in_features
    chunks = max(c for c in range(1, torch.get_num_threads() + 1) if c == 1 or (d_in % c == 0 and d_in // c >= 64))
    layer.decode_weight = transposed.view(chunks, d_in // chunks, layer.out_features)
    bias = layer.bias.detach() if layer.bias is not None else transposed.new_zeros(layer.out_features)
    layer.decode_bias = F.pad(bias[None, None], (0, 0, 0, 0, 0, chunks - 1))  # added once, by chunk 0


def _transposed(weight: Tensor, block: int = 256) -> Tensor:
    """``weight.t().contiguous()``, copied ``block`` rows at a time: each block's reads and writes stay in cache
    (the 25 weights of the benchmarks' GPT-2-like model: 11-13 ms instead of 17-18 ms on 2 cores)."""
    out = weight.new_empty(weight.shape[1], weight.shape[0])
    for i in range(0, weight.shape[0], block):
        out[:, i:i + block] = weight[i:i + block].t()
    return out


def return_freed_memory() -> None:
    """Hand the memory that converting weights freed back to the system (glibc keeps freed blocks of up to
    32 MB for reuse: a model loaded in bf16 or int8 would otherwise stay resident at its float32 size). A no-op
    where glibc is not the C library."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
        self.up = Linear(d_model, 2 * d_ff if self.gated else d_ff, bias=bias)
        self.down = Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)  # (B, T, d_ff) or (B, T, 2 * d_ff)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.down(h)
