"""Precision modes of a run: fp32, fp32-fast (oneDNN / TF32 matmuls), bf16 autocast, fp16 autocast with loss scaling."""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from functools import cache

import torch

from lmlab.errors import ConfigError

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a mode the device cannot run (fp16 with loss scaling is for CUDA)."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision = 'fp16' needs a CUDA device (loss scaling); use 'bf16' on the CPU")


@cache
def has_native_bf16() -> bool | None:
    """Whether this x86 CPU has bf16 instructions (AVX-512 BF16 or AMX); None where that is not known (other
    architectures). Without them oneDNN emulates bf16 matmuls, slower than fp32."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return None


def precision_warning(precision: str, device: torch.device) -> str | None:
    """What a user should know before running in this mode on this device, if anything."""
    if precision == "bf16" and device.type == "cpu" and has_native_bf16() is False:
        return ("train.precision = 'bf16' on a CPU without bf16 instructions (AVX-512 BF16 or AMX): bf16 is "
                "emulated here, slower than fp32; use 'fp32' or 'fp32-fast'. MFU is not reported.")
    return None


@contextlib.contextmanager
def run_precision(precision: str) -> Iterator[None]:
    """For the whole run: fp32-fast routes fp32 matmuls through oneDNN (CPU) or TF32 (CUDA); restored after."""
    before = torch.get_float32_matmul_precision()
    if precision == "fp32-fast":
        torch.set_float32_matmul_precision("medium")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast region for forward and loss (a no-op for fp32 and fp32-fast)."""
    if precision not in _AUTOCAST:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST[precision])


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls run in: what the peak FLOP/s for MFU is measured with."""
    return _AUTOCAST.get(precision, torch.float32)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (disabled, a pass-through, for every other mode)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
