"""Peak FLOP/s of this machine for MFU: a short matmul benchmark at the start of each run, the best value ever
measured kept per machine.

A measurement taken while the machine is busy is low; keeping the best of every run's measurement (instead of
the first one, forever) lets the next quiet run correct it. The benchmark draws its matrices from a generator of
its own, so measuring never changes a run's random state.
"""

from __future__ import annotations

import json
import os
import platform
import time
from functools import cache
from pathlib import Path

import torch

from lmlab.train.precision import has_native_bf16


def _cache_file() -> Path:
    root = os.environ.get("LMLAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lmlab")
    return Path(root) / "peak_flops.json"


@cache
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _benchmark(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """Best FLOP/s of ``n x n`` matmuls over about ``seconds``, at least three timed rounds however long they take
    (on a busy machine the warm-up alone can outlast ``seconds``)."""
    generator = torch.Generator(device).manual_seed(0)  # never the global generator: the run's random state
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    for _ in range(2):  # warm-up
        a @ b
    best, rounds = 0.0, 0
    deadline = time.perf_counter() + seconds
    while rounds < 3 or time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 4 * 2 * n**3 / max(time.perf_counter() - t, 1e-9))
        rounds += 1
    return best


def measure_peak_flops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, n: int | None = None,
                       seconds: float = 0.3) -> float | None:
    """Peak FLOP/s for ``dtype`` matmuls on ``device``: the best of this measurement (``n x n`` matmuls for
    about ``seconds``; n is 1024 on a CPU, 4096 on a GPU) and every earlier one on this machine (cached per device
    model, dtype, threads, torch version and matmul precision).

    Returns None where a peak means nothing: bfloat16 on a CPU without bf16 instructions, where it is emulated.
    """
    device = torch.device(device)
    if dtype == torch.bfloat16 and device.type == "cpu" and has_native_bf16() is False:
        return None
    n = n or (4096 if device.type == "cuda" else 1024)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    key = f"{device.type}:{name}:{dtype}:{torch.get_num_threads()}:{torch.__version__}:" \
          f"{torch.get_float32_matmul_precision()}"
    cache_file = _cache_file()
    try:
        known = json.loads(cache_file.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    measured = _benchmark(device, dtype, n, seconds)
    try:
        cached = float(known.get(key, 0.0))
    except (TypeError, ValueError):
        cached = 0.0
    if measured <= cached:
        return cached
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        known[key] = measured
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1))
        os.replace(tmp, cache_file)  # concurrent runs never leave a torn cache
    except OSError:  # a read-only home only loses the memory of earlier measurements
        pass
    return measured
