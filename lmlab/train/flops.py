"""Peak FLOP/s of this machine, measured once with a matmul benchmark and cached, for MFU."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch


def _cache_file() -> Path:
    root = os.environ.get("LMLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lmlab")
    return Path(root) / "peak_flops.json"


def measure_peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024,
                       seconds: float = 1.0) -> float:
    """Best FLOP/s of ``n x n`` matmuls over about ``seconds``; cached per device, dtype, threads and torch."""
    device = torch.device(device)
    key = f"{device.type}:{torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}:{dtype}:" \
          f"{torch.get_num_threads()}:{torch.__version__}:{torch.get_float32_matmul_precision()}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return float(known[key])
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + seconds
    for _ in range(3):  # warm-up
        a @ b
    while time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        known[key] = best
        cache.write_text(json.dumps(known, indent=1))
    except OSError:  # a read-only home only costs a re-measurement
        pass
    return best
