"""Every objective trains a tiny model through the real trainer, and every shipped config runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.config import load_config
from lmlab.objectives import check_objective
from lmlab.train import pretrain

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))
QUICK = {"data": {"seq_len": 32}, "train": {"batch_size": 4, "eval_batches": 2, "progress": False,
                                            "peak_flops": 1e11, "log_every": 1, "warmup_steps": 5}}


def _run(shards, out_dir, preset, objective, steps, model=None, **objective_options):
    cfg = load_config(None, {**QUICK, "preset": preset, "data": {"path": str(shards), "seq_len": 32},
                             "model": model or {},
                             "objective": {"name": objective, **objective_options},
                             "train": {**QUICK["train"], "out_dir": str(out_dir), "max_steps": steps,
                                       "eval_every": steps, "lr": 3e-3}})
    check_objective(cfg)
    return pretrain(cfg)


@pytest.mark.parametrize("preset, objective, options", [
    ("gpt2-tiny", "clm", {}),
    ("bert-tiny", "mlm", {}),
    ("bert-tiny", "mlm", {"whole_word": True}),
    ("gpt2-tiny", "mlm", {}),  # masked LM on a decoder run bidirectionally
    ("t5-tiny", "span", {}),
    ("t5-tiny", "bart", {}),
    ("gpt2-tiny", "fim", {}),
    ("gpt2-tiny", "prefix_lm", {}),
    ("llama-tiny", "span", {}),  # span corruption on a decoder: inputs ++ targets, the inputs a prefix
    ("t5-tiny", "ul2", {}),
    ("gpt2-tiny", "ul2", {}),
    ("bert-tiny", "electra", {"model": {"lm_head": False, "mlm_transform": False}}),
])
def test_loss_falls_well_below_its_start(sentinel_shards, tmp_path, preset, objective, options):
    start = _run(sentinel_shards, tmp_path / "start", preset, objective, 1, **options).last_eval["val_loss"]
    end = _run(sentinel_shards, tmp_path / "end", preset, objective, 60, **options).last_eval["val_loss"]
    assert end < start - 1.0, (start, end)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_trains_a_few_steps(sentinel_shards, tmp_path, path):
    cfg = load_config(path, {**QUICK, "data": {"path": str(sentinel_shards), "seq_len": 32},
                             "train": {**QUICK["train"], "out_dir": str(tmp_path), "max_steps": 2,
                                       "eval_every": 2}})
    check_objective(cfg)
    assert pretrain(cfg).step == 2
