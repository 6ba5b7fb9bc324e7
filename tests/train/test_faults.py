"""Faults a long run meets: a non-finite loss, a full or read-only disk, a wrong out_dir, a resume from an older
checkpoint, a metrics log torn by a kill. Each keeps every good checkpoint and ends with a clear error."""

from __future__ import annotations

import errno
import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import _cfg, _tensors  # (tests/train is on sys.path under pytest)

from lmlab.cli import main
from lmlab.errors import CheckpointError, ConfigError
from lmlab.objectives.clm import CausalLM
from lmlab.train import checkpoint as ckpt
from lmlab.train import pretrain

FAST = {"eval_every": 100, "grad_accum": 1}


def _nan_at(monkeypatch, steps: set[int]) -> None:
    """The causal-LM loss is NaN at these training steps (1-based; one micro-batch a step)."""
    loss, calls = CausalLM.loss, []

    def poisoned(self, model, batch):
        out = loss(self, model, batch)
        if model.training:
            calls.append(1)
            if len(calls) in steps:
                return (out[0] * float("nan"), *out[1:])
        return out

    monkeypatch.setattr(CausalLM, "loss", poisoned)


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_nan_step_is_skipped_and_counted(shards, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {3, 4})
    result = pretrain(_cfg(shards, tmp_path / "run", max_steps=6, **FAST))
    assert result.step == 6
    tensors = {**load_file(str(result.checkpoint / "model.safetensors")),
               **load_file(str(result.checkpoint / "optimizer.safetensors"))}
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert {float(t) for k, t in tensors.items() if k.endswith(".step")} == {4.0}  # AdamW took 6 - 2 steps
    losses = {r["step"]: r for r in _records(tmp_path / "run") if "loss" in r}
    assert losses[3]["loss"] is None and losses[3]["skipped_steps"] == 1 and losses[6]["skipped_steps"] == 2


def test_a_diverged_run_stops_and_keeps_its_good_checkpoints(shards, tmp_path, monkeypatch, capsys):
    """NaN from step 5 on: the run stops after train.max_bad_steps of them, exit 2, with steps 2 and 4 kept."""
    _nan_at(monkeypatch, set(range(5, 100)))
    run = tmp_path / "run"
    args = ["pretrain", "--preset", "gpt2-tiny", f"--data.path={shards}", "--data.seq_len=32",
            f"--train.out_dir={run}", "--train.max_steps=20", "--train.save_every=2", "--train.keep_last=2",
            "--train.max_bad_steps=3", "--train.log_every=10", "--train.eval_every=100", "--train.batch_size=4",
            "--train.warmup_steps=1", "--train.peak_flops=1e11", "--train.progress=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error:") and re.search(r"in [34] steps in a row", err) and "step-000004" in err
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000002", "step-000004"]
    weights = load_file(str(run / "step-000004" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert _records(run)[-1]["event"] == "diverged"


def test_non_finite_weights_are_never_saved(tmp_path, tokenizer):
    from lmlab.config import TrainConfig, model_preset
    from lmlab.model import build_model
    from lmlab.train.optim import build_optimizer

    model = build_model(model_preset("gpt2-tiny", vocab_size=tokenizer.vocab_size))
    optimizer = build_optimizer(model, TrainConfig())
    good = ckpt.save_checkpoint(tmp_path, 1, model, tokenizer, optimizer, {}, {}, keep_last=1)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        ckpt.save_checkpoint(tmp_path, 2, model, tokenizer, optimizer, {}, {}, keep_last=1)
    assert ckpt.list_checkpoints(tmp_path) == [good]


def test_resume_refuses_an_out_dir_that_holds_another_run(shards, tmp_path):
    a = pretrain(_cfg(shards, tmp_path / "a", max_steps=2, **FAST))
    b = pretrain(_cfg(shards, tmp_path / "b", max_steps=2, **FAST))
    with pytest.raises(CheckpointError, match="another run's checkpoints"):
        pretrain(_cfg(shards, tmp_path / "b", max_steps=3, **FAST), resume=a.checkpoint)
    assert ckpt.list_checkpoints(tmp_path / "b") == [b.checkpoint]
    # an empty directory is a branch of run a
    branch = pretrain(_cfg(shards, tmp_path / "branch", max_steps=3, **FAST), resume=a.checkpoint)
    assert branch.step == 3 and ckpt.list_checkpoints(tmp_path / "a") == [a.checkpoint]


def test_overwrite_replaces_another_run_and_keeps_the_users_files(shards, tmp_path, caplog):
    """--overwrite: a new run into another run's directory removes what lmlab wrote there (checkpoints, metrics,
    evaluations) and nothing else, and ends as the same run in an empty directory does."""
    def args(out, *more):
        return ["pretrain", "--preset", "gpt2-tiny", f"--data.path={shards}", "--data.seq_len=32",
                f"--train.out_dir={out}", "--train.max_steps=2", "--train.save_every=2", "--train.eval_every=100",
                "--train.batch_size=4", "--train.peak_flops=1e11", "--train.progress=false", *more]

    fresh, run = tmp_path / "fresh", tmp_path / "run"
    assert main(args(fresh)) == 0
    assert main(args(run, "--train.max_steps=4", "--train.seed=1")) == 0  # another run: steps 2 and 4
    (run / "eval-test").mkdir()  # as `lmlab evaluate` writes
    (run / "eval-test" / "scores.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        assert main(args(run, "--overwrite")) == 0
    assert re.search(r"--overwrite: removed eval-test, .*step-000002, step-000004 from", caplog.text)
    assert sorted(p.name for p in run.iterdir()) == sorted([p.name for p in fresh.iterdir()] + ["notes.txt"])
    assert (run / "notes.txt").read_text() == "mine"
    mine, theirs = _tensors(run / "step-000002"), _tensors(fresh / "step-000002")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert max(r["step"] for r in _records(run)) == 2  # the old run's log is gone


def test_overwrite_with_resume_is_refused(shards, tmp_path):
    a = pretrain(_cfg(shards, tmp_path / "a", max_steps=2, **FAST))
    with pytest.raises(CheckpointError, match="or replace that run with --overwrite"):
        pretrain(_cfg(shards, tmp_path / "a", max_steps=2, **FAST))
    with pytest.raises(ConfigError, match="--overwrite and --resume exclude each other"):
        pretrain(_cfg(shards, tmp_path / "a", max_steps=3, **FAST), resume=tmp_path / "a", overwrite=True)
    assert ckpt.list_checkpoints(tmp_path / "a") == [a.checkpoint]


def test_resuming_an_older_checkpoint_sets_the_newer_aside(shards, tmp_path):
    """Run to step 6 (keeping 4 and 6), resume from 4: the new step 5 is neither pruned at once nor is step 4;
    step 6 of the first run is moved aside, kept, and not taken for the newest."""
    run = tmp_path / "run"
    pretrain(_cfg(shards, run, max_steps=6, save_every=2, keep_last=2, **FAST))
    old6 = load_file(str(run / "step-000006" / "model.safetensors"))
    result = pretrain(_cfg(shards, run, max_steps=6, save_every=2, keep_last=2, **FAST),
                      resume=run / "step-000004", stop_after=5)
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-000004", "step-000005"]
    assert ckpt.resolve_checkpoint(run) == result.checkpoint
    aside = run / "superseded-step-000004"
    assert [p.name for p in ckpt.list_checkpoints(aside)] == ["step-000006"]
    assert max(r["step"] for r in _records(aside)) == 6 and max(r["step"] for r in _records(run)) == 5
    again = pretrain(_cfg(shards, run, max_steps=6, save_every=2, keep_last=2, **FAST), resume=run)
    new6 = load_file(str(again.checkpoint / "model.safetensors"))
    assert all(torch.equal(old6[k], new6[k]) for k in old6)  # the same run, continued exactly


def test_a_full_disk_stops_the_run_and_keeps_the_checkpoints(shards, tmp_path, monkeypatch, capsys):
    save_file, calls = ckpt.save_file, []

    def full(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > 2:  # the second checkpoint (weights, then optimizer state)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", full)
    run = tmp_path / "run"
    args = ["pretrain", "--preset", "gpt2-tiny", f"--data.path={shards}", "--data.seq_len=32",
            f"--train.out_dir={run}", "--train.max_steps=4", "--train.save_every=2", "--train.eval_every=100",
            "--train.batch_size=4", "--train.peak_flops=1e11", "--train.progress=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error: could not write") and "No space left on device" in err
    assert [p.name for p in run.iterdir() if "step" in p.name] == ["step-000002"]


def test_resume_after_a_torn_metrics_line(shards, tmp_path):
    run = tmp_path / "run"
    pretrain(_cfg(shards, run, max_steps=2, **FAST))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "lo')  # killed in the middle of a write
    result = pretrain(_cfg(shards, run, max_steps=3, **FAST), resume=run)
    assert result.step == 3 and [r["step"] for r in _records(run) if "loss" in r] == [1, 2, 3]


def test_a_metrics_rewrite_left_by_a_kill_is_removed(shards, tmp_path):
    """A kill while metrics.jsonl is rewritten on resume leaves .metrics.jsonl.PID: the next run removes those of
    processes that are gone, and leaves a live process's alone."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    pretrain(_cfg(shards, run, max_steps=2, **FAST))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    for pid in (dead, os.getppid()):
        (run / f".metrics.jsonl.{pid}").write_text('{"step": 1, "loss": 5.0}\n')
    pretrain(_cfg(shards, run, max_steps=3, **FAST), resume=run)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [f".metrics.jsonl.{os.getppid()}"]
    assert [r["step"] for r in _records(run) if "loss" in r] == [1, 2, 3]


def test_without_a_progress_bar_a_line_every_log_every_steps(shards, tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        pretrain(_cfg(shards, tmp_path / "run", max_steps=4, log_every=2, warmup_steps=10, **FAST))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/4", "step 4/4", "step 4"]  # (+ the evaluation)
    assert "loss" in lines[0] and "tok/s" in lines[0]
    assert "train.max_steps (4) is below train.warmup_steps (10)" in caplog.text
    pretrain(_cfg(shards, tmp_path / "mlm", "mlm", max_steps=2, log_every=2, **FAST))  # the objective's own numbers
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2/2"))
    assert re.search(r"loss [\d.]+, accuracy 0\.\d{3}, lr", line), line
