"""Precision modes of a run: fp32, fp32-fast (oneDNN / TF32 matmuls), bf16 autocast, fp16 autocast with loss scaling."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lmlab.errors import ConfigError

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a mode the device cannot run (fp16 with loss scaling is for CUDA)."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision = 'fp16' needs a CUDA device (loss scaling); use 'bf16' on the CPU")


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
