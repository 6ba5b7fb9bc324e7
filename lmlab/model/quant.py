"""Weight-only int8 quantization for inference: a quarter of float32's bytes a token reads, activations in float.

Each :class:`~lmlab.model.layers.Linear` weight (and the token embedding, which a tied head shares) becomes int8
with one scale per output channel, symmetric: ``scale = max|w_row| / 127``, rounded to bfloat16 first so that
the scale the kernel uses is the one the weights were rounded with, then ``q = round(w / scale)`` in [-127, 127].
A product is ``(x @ q.T) * scale`` in bfloat16 (activations are cast to it and the result back): on a CPU, up to
:data:`KERNEL_ROWS` rows go through PyTorch's weight-only kernel ``torch._weight_int8pack_mm`` (the one torchao
uses), which reads the int8 weights directly; more rows (a prompt, a training-size batch), other devices and
widths the kernel does not take dequantize the weight for one bfloat16 GEMM.

``int8-dynamic`` holds the same int8 rows and scales in fbgemm's packed form and multiplies them as ``torch.ao``'s
dynamic quantization does (``quantized.linear_dynamic``, what ``transformers`` users get from
``torch.ao.quantization.quantize_dynamic``): the activations are quantized too, to 7-bit integers with one scale
per call, and the product runs in integers, 1.3-2x as fast at batch 1 on a 1B-class model here; the price is the
activations' rounding (see ``benchmarks/quantize_quality.py``). x86 CPUs (fbgemm) only.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QUANTIZE = ("int8", "int8-dynamic")  # the weight formats for_inference takes
KERNEL_ROWS = 64  # products of at most this many rows use the int8 kernel (faster than dequantizing up to ~64)
SCALE_DTYPE = torch.bfloat16  # the kernel's activation and scale type
FBGEMM = "fbgemm" in torch.backends.quantized.supported_engines  # int8-dynamic's and bf16's float16 GEMMs (x86)
QUANTIZE_BLOCK = 1024  # rows quantized at a time
DYNAMIC_REFUSED = "int8-dynamic runs on x86 CPUs only (fbgemm's int8 GEMM); use int8 (weight-only) here"


def dynamic_runs_on(device: str | torch.device) -> bool:
    """Whether ``int8-dynamic`` weights can run on ``device``: a CPU where fbgemm is built (x86)."""
    return FBGEMM and torch.device(device).type == "cpu"


def quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(q, scale)`` of a (out, in) float weight: int8 rows and their (out,) bfloat16 scales, ``q * scale``
    within half a step of the weight."""
    w = weight.detach()
    largest = torch.maximum(w.amax(1), w.amin(1).neg()).float()  # max |w| of each row, without a copy of w
    scale = (largest / 127).clamp_min(torch.finfo(torch.float32).tiny).to(SCALE_DTYPE)
    q = torch.empty(w.shape, dtype=torch.int8, device=w.device)
    for i in range(0, w.shape[0], QUANTIZE_BLOCK):  # a block of rows at a time: no float copy of the whole weight
        rows = slice(i, i + QUANTIZE_BLOCK)
        q[rows] = (w[rows].float() / scale[rows].float()[:, None]).round_().clamp_(-127, 127)
    return q, scale


def _kernel_takes(x: Tensor, q: Tensor) -> bool:
    # the CPU kernel reads rows of 16 bytes: other widths crash it (measured on torch 2.13), so they dequantize
    return x.device.type == "cpu" and x.shape[0] <= KERNEL_ROWS and q.shape[1] % 16 == 0


def int8_linear(x: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, q * scale[:, None], bias)`` with int8 ``q`` (out, in) and bfloat16 ``scale`` (out,), computed
    in bfloat16 and returned in ``x``'s dtype."""
    rows = x.reshape(-1, x.shape[-1]).to(SCALE_DTYPE)
    if _kernel_takes(rows, q):
        y = torch._weight_int8pack_mm(rows.contiguous(), q, scale)
    else:
        y = F.linear(rows, q.to(SCALE_DTYPE)) * scale
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], q.shape[0])


class Int8Embedding(nn.Module):
    """A token embedding of int8 rows and their scales, looked up and returned in ``dtype``. Its ``weight`` is
    the int8 parameter, shared with a tied head's projection."""

    def __init__(self, weight: nn.Parameter, scale: Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = weight
        self.register_buffer("scale", scale)
        self.dtype = dtype

    @property
    def num_embeddings(self) -> int:
        return self.weight.shape[0]

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.weight).to(SCALE_DTYPE) * self.scale[ids].unsqueeze(-1)
        return rows.to(self.dtype)


def int8_dynamic(x: Tensor, packed: object) -> Tensor:
    """``x @ w.T + bias`` through fbgemm's dynamically quantized GEMM (float32 out, 7-bit activations as
    ``torch.ao`` takes them on fbgemm, so that its 16-bit intermediate sums cannot overflow)."""
    return torch.ops.quantized.linear_dynamic(x.float(), packed, True)


def quantize_int8(model: nn.Module, dynamic: bool = False) -> int:
    """Replace, in place, every :class:`~lmlab.model.layers.Linear` weight of ``model`` (a lmlab Transformer in
    eval mode) and its token embedding by int8 rows and scales; a tied head and embedding keep sharing one
    int8 matrix. With ``dynamic`` (``int8-dynamic``), the Linear weights of a CPU model are packed for
    :func:`int8_dynamic` instead (but a head tied to the embedding, which would need a second copy). The float
    weights are freed. For inference only: the model can no longer be trained. Returns the number of matrices
    quantized.

    Raises:
        ValueError: ``dynamic`` where fbgemm is missing (not an x86 CPU) or the model is not on a CPU.
    """
    from lmlab.model.layers import Linear, hold_packed, return_freed_memory

    if dynamic and not dynamic_runs_on(model.embed.weight.device):
        raise ValueError(DYNAMIC_REFUSED)
    dtype = model.embed.weight.dtype
    done: dict[int, tuple[nn.Parameter, Tensor]] = {}  # id of a float weight -> its int8 parameter and scales

    def quantized(weight: Tensor) -> tuple[nn.Parameter, Tensor]:
        if id(weight) not in done:
            q, scale = quantize_rows(weight)
            done[id(weight)] = (nn.Parameter(q, requires_grad=False), scale)
        return done[id(weight)]

    tied = model.embed.weight
    with torch.no_grad():
        for layer in [m for m in model.modules() if isinstance(m, Linear)]:
            if dynamic and layer.weight is not tied:
                q, scale = quantize_rows(layer.weight)
                zeros = torch.zeros(q.shape[0], dtype=torch.long)
                with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao
                    warnings.simplefilter("ignore", UserWarning)
                    channels = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
                bias = None if layer.bias is None else layer.bias.float()
                hold_packed(layer, int8_dynamic, torch.ops.quantized.linear_prepack(channels, bias), like=q)
                done[id(layer)] = (layer.weight, scale)
            else:
                layer.weight, scale = quantized(layer.weight)
                layer.register_buffer("scale", scale)
                layer.decode_weight = layer.decode_bias = None
            return_freed_memory()  # the rounding's temporaries: freed heap memory would pile up between matrices
        model.embed = Int8Embedding(*quantized(model.embed.weight), dtype)
    return len(done)
