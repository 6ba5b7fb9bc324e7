"""Timing shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def alternating_medians(fns: list[Callable[[], Any]], rounds: int, warmup: int = 1) -> list[tuple[float, Any]]:
    """Median seconds of each function and its last output: ``warmup`` untimed calls each, then ``rounds``
    rounds that call them in turn, so that load from other processes hits all of them alike."""
    outs = [None] * len(fns)
    for i, fn in enumerate(fns):
        for _ in range(warmup):
            outs[i] = fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(t), out) for t, out in zip(times, outs, strict=True)]
