"""What the trainer reports is what each objective's numbers mean, and user mistakes found by trying lmlab are clear
errors (issue 15: items 10, 11, 12, 16, 27)."""

from __future__ import annotations

import json

import pytest

from lmlab.cli import main
from lmlab.config import load_config
from lmlab.errors import CheckpointError, ConfigError


def _log(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_electra_reports_its_two_models_and_no_perplexity(shards, tmp_path):
    assert main(["pretrain", "--preset", "bert-tiny", "--objective.name", "electra", "--model.lm_head", "false",
                 "--model.mlm_transform", "false", "--data.path", str(shards), "--data.seq_len", "32",
                 "--train.out_dir", str(tmp_path / "run"), "--train.max_steps", "2", "--train.log_every", "1",
                 "--train.eval_every", "2", "--train.eval_batches", "1", "--train.batch_size", "4",
                 "--train.progress", "false", "--train.peak_flops", "1e11"]) == 0
    log = _log(tmp_path / "run")
    step = next(r for r in log if r.get("step") == 1 and "loss" in r)
    assert {"generator_mlm_loss", "discriminator_loss", "discriminator_accuracy"} <= set(step)
    val = next(r for r in log if "val_loss" in r)
    assert "val_ppl" not in val and 0 <= val["val_discriminator_accuracy"] <= 1 and "val_generator_ppl" in val


def test_mlm_still_reports_validation_accuracy(shards, tmp_path):
    assert main(["pretrain", "--preset", "bert-tiny", "--objective.name", "mlm", "--data.path", str(shards),
                 "--data.seq_len", "32", "--train.out_dir", str(tmp_path / "run"), "--train.max_steps", "1",
                 "--train.eval_batches", "1", "--train.batch_size", "4", "--train.progress", "false",
                 "--train.peak_flops", "1e11"]) == 0
    val = next(r for r in _log(tmp_path / "run") if "val_loss" in r)
    assert 0 <= val["val_accuracy"] <= 1 and val["val_ppl"] > 1


def test_infinite_learning_rate_is_refused():
    with pytest.raises(ConfigError, match="train.lr must be a positive number"):
        load_config(None, ["--train.lr", "inf"])


def test_tokenizer_larger_than_the_model_is_a_checkpoint_error(tokenizer, tmp_path):
    import dataclasses

    from lmlab.model import build_model
    from lmlab.train.checkpoint import load_model, save_model_dir

    cfg = load_config(None, {"preset": "gpt2-tiny"}).model
    model = build_model(dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size - 10))
    save_model_dir(tmp_path, model, tokenizer)
    with pytest.raises(CheckpointError, match=f"tokenizer has {tokenizer.vocab_size} tokens"):
        load_model(tmp_path)
