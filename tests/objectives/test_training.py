"""Every objective trains a tiny model through the real trainer, and every shipped config runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.config import load_config
from lmlab.objectives import TASKS, check_objective
from lmlab.train import pretrain
from lmlab.train.finetune import finetune

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.toml")
                 if not p.name.startswith("compare-"))  # a comparison's config: tests/test_compare.py
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
def test_every_shipped_config_trains_a_few_steps(sentinel_shards, task_tokenizer, reversal_data, class_data,
                                                 sft_data, preference_data, tmp_path, path):
    train = {**QUICK["train"], "out_dir": str(tmp_path), "max_steps": 2, "eval_every": 2}
    name = load_config(path).objective.name
    if name in TASKS:  # a fine-tuning config: on the test examples, from a tiny model with random weights
        data = {"classify": class_data, "sft": sft_data, "dpo": preference_data}.get(name, reversal_data)
        cfg = load_config(path, {**QUICK, "preset": "gpt2-tiny", "data": {"train": str(data), "seq_len": 12,
                                                                          "decoder_seq_len": 8},
                                 "finetune": {"init": "none", "tokenizer": str(task_tokenizer), "eval_examples": 4,
                                              "max_new_tokens": 8},
                                 "train": {**train, "out_dir": str(tmp_path), "eval_batches": 1}})
        check_objective(cfg)
        assert finetune(cfg).step == 2
        return
    cfg = load_config(path, {**QUICK, "data": {"path": str(sentinel_shards), "seq_len": 32}, "train": train})
    check_objective(cfg)
    assert pretrain(cfg).step == 2


def test_pretrain_refuses_a_fine_tuning_task(sentinel_shards, tmp_path):
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="fine-tuning task.*lmlab finetune"):
        _run(sentinel_shards, tmp_path, "gpt2-tiny", "seq2seq", 1)
