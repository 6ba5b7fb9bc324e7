"""Peak FLOP/s for MFU: never zero, never the run's random state, and not a busy moment's value forever."""

from __future__ import annotations

import json
import logging

import torch
from safetensors.torch import load_file
from test_trainer import _cfg  # (tests/train is on sys.path under pytest)

from lmlab.train import flops, precision, pretrain
from lmlab.train.flops import measure_peak_flops


def test_a_measurement_is_never_zero(tmp_path, monkeypatch):
    """On a busy machine the warm-up can outlast the time given: the old loop then timed nothing and cached 0.0."""
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    assert measure_peak_flops("cpu", n=64, seconds=0.0) > 1e6


def test_the_best_measurement_is_kept(tmp_path, monkeypatch):
    """A value measured while the machine was busy (here 1 FLOP/s) is replaced by the next, better measurement;
    a better value than this measurement is kept."""
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    measure_peak_flops("cpu", n=64, seconds=0.01)
    cache = tmp_path / "peak_flops.json"
    (key,) = json.loads(cache.read_text())
    cache.write_text(json.dumps({key: 1.0}))
    fresh = measure_peak_flops("cpu", n=64, seconds=0.01)
    assert fresh > 1e6 and json.loads(cache.read_text())[key] == fresh
    cache.write_text(json.dumps({key: 1e18}))
    assert measure_peak_flops("cpu", n=64, seconds=0.01) == 1e18


def test_measuring_leaves_the_random_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    before = torch.get_rng_state()
    measure_peak_flops("cpu", n=64, seconds=0.01)
    assert torch.equal(before, torch.get_rng_state())


def test_a_run_is_the_same_with_an_empty_or_a_warm_cache(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    runs = [pretrain(_cfg(shards, tmp_path / name, max_steps=2, peak_flops=0.0)) for name in ("empty", "warm")]
    assert (tmp_path / "cache" / "peak_flops.json").is_file()
    a, b = (load_file(str(r.checkpoint / "model.safetensors")) for r in runs)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_emulated_bf16_reports_no_mfu_and_warns(shards, tmp_path, monkeypatch, caplog):
    """bf16 on a CPU without bf16 instructions: no peak (it was cached as 0.0, then MFU divided by it)."""
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "has_native_bf16", lambda: False)
    monkeypatch.setattr(flops, "has_native_bf16", lambda: False)
    assert measure_peak_flops("cpu", torch.bfloat16) is None
    with caplog.at_level(logging.WARNING):
        pretrain(_cfg(shards, tmp_path / "run", max_steps=2, peak_flops=0.0, precision="bf16"))
    assert "emulated" in caplog.text
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["mfu"] for r in records if "loss" in r] == [None, None]
