"""The training loop: exact resume, accumulation, evaluation, interruption."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import torch
from safetensors.torch import load_file

from lmlab.config import load_config
from lmlab.errors import CheckpointError, ConfigError
from lmlab.model import build_model
from lmlab.train import config_from_checkpoint, pretrain

PRESETS = {"clm": "gpt2-tiny", "mlm": "bert-tiny", "span": "t5-tiny", "bart": "t5-tiny", "fim": "gpt2-tiny",
           "prefix_lm": "gpt2-tiny", "ul2": "t5-tiny", "electra": "bert-tiny"}


def _cfg(shards, out_dir, objective="clm", dropout=0.1, **train):
    """A tiny run: 6 steps of 2 x 4 sequences of 32 tokens, evaluating every 2 steps and saving every 4."""
    return load_config(None, {
        "preset": PRESETS[objective],
        "model": {"dropout": dropout, **({"lm_head": False, "mlm_transform": False} if objective == "electra" else {})},
        "data": {"path": str(shards), "seq_len": 32},
        "objective": {"name": objective},
        "train": {"out_dir": str(out_dir), "batch_size": 4, "grad_accum": 2, "max_steps": 6, "warmup_steps": 2,
                  "lr": 1e-2, "eval_every": 2, "eval_batches": 2, "save_every": 4, "log_every": 1,
                  "peak_flops": 1e11, "progress": False, **train}})


def _tensors(path):
    return {**load_file(str(path / "model.safetensors")), **load_file(str(path / "optimizer.safetensors"))}


@pytest.mark.parametrize("objective", list(PRESETS))
def test_resume_is_bit_identical(sentinel_shards, tmp_path, objective):
    """2N steps in one run == N steps, stop, resume, N steps: weights, AdamW moments and generators."""
    shards = sentinel_shards  # a tokenizer with sentinels serves every objective
    whole = pretrain(_cfg(shards, tmp_path / "whole", objective))
    half = pretrain(_cfg(shards, tmp_path / "split", objective), stop_after=3)
    assert half.step == 3 and half.checkpoint.name == "step-000003"
    rest = pretrain(_cfg(shards, tmp_path / "split", objective), resume=tmp_path / "split")
    assert whole.step == rest.step == 6
    a, b = _tensors(whole.checkpoint), _tensors(rest.checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole.last_eval == rest.last_eval
    # the metrics log of the resumed run continues the first one, without duplicate steps
    steps = [r["step"] for r in map(json.loads, (tmp_path / "split" / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == sorted(set(steps)) == list(range(1, 7))


def test_training_lowers_loss_and_writes_artifacts(shards, tmp_path):
    cfg = _cfg(shards, tmp_path / "run", max_steps=30, eval_every=30, save_every=10, keep_last=2)
    first = pretrain(_cfg(shards, tmp_path / "probe", max_steps=1)).last_eval["val_loss"]
    result = pretrain(cfg)
    assert result.last_eval["val_loss"] < first - 1.0
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("step-")) == ["step-000020", "step-000030"]
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp")]
    assert (run / "loss.png").stat().st_size > 1000
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["params"] > 0
    train_records = [r for r in records if "loss" in r]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] for r in train_records)
    # MFU is the objective's FLOPs per second against train.peak_flops: with fixed shapes, FLOPs per token x tok/s
    per_token = build_model(config_from_checkpoint(run).model).flops_per_token(32)
    assert all(r["mfu"] * 1e11 == pytest.approx(r["tokens_per_s"] * per_token) for r in train_records)
    assert train_records[-1]["tokens"] == 30 * 2 * 4 * 32
    ckpt = result.checkpoint
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_state.json",
            "optimizer.safetensors"} <= {p.name for p in ckpt.iterdir()}
    assert config_from_checkpoint(run).train.max_steps == 30


def test_the_start_record_names_the_lmlab_commit_it_ran_from(shards, tmp_path):
    from lmlab.train.log import source_commit

    pretrain(_cfg(shards, tmp_path / "run", max_steps=1))
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start"  # (source_commit is {} where git cannot read the checkout: nothing recorded)
    assert {k: start[k] for k in ("lmlab_commit", "lmlab_dirty") if k in start} == source_commit()


def test_accumulation_equals_a_larger_batch(shards, tmp_path):
    """2 micro-batches of 4 take the same step as 1 batch of 8: the loss is divided by the global target count."""
    a = pretrain(_cfg(shards, tmp_path / "a", dropout=0.0, grad_accum=2, batch_size=4, max_steps=2))
    b = pretrain(_cfg(shards, tmp_path / "b", dropout=0.0, grad_accum=1, batch_size=8, max_steps=2,
                       eval_batches=1))  # the same 8 validation windows
    wa, wb = (load_file(str(r.checkpoint / "model.safetensors")) for r in (a, b))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-5, msg=name)
    assert a.last_eval["val_loss"] == pytest.approx(b.last_eval["val_loss"], abs=1e-5)


def test_refuses_to_overwrite_a_run(shards, tmp_path):
    pretrain(_cfg(shards, tmp_path / "run", max_steps=1))
    with pytest.raises(CheckpointError, match="--resume"):
        pretrain(_cfg(shards, tmp_path / "run", max_steps=1))


def test_seq_len_above_the_model_maximum(shards, tmp_path):
    with pytest.raises(ConfigError, match="max_seq_len"):
        load_config(None, {"preset": "gpt2-tiny", "data": {"path": str(shards), "seq_len": 4096}})


def test_sigterm_saves_a_checkpoint(shards, tmp_path):
    cfg = _cfg(shards, tmp_path / "run", max_steps=10_000, save_every=10_000, eval_every=10_000)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        result = pretrain(cfg)
    finally:
        timer.cancel()
    assert result.interrupted and 0 < result.step < 10_000
    assert result.checkpoint.name == f"step-{result.step:06d}"
    resumed = pretrain(_cfg(shards, tmp_path / "run", max_steps=result.step + 1), resume=tmp_path / "run")
    assert resumed.step == result.step + 1 and not resumed.interrupted


def test_activation_checkpointing_trains_the_same(shards, tmp_path):
    runs = [pretrain(_cfg(shards, tmp_path / str(flag), max_steps=3, activation_checkpointing=flag))
            for flag in (False, True)]
    losses = [[json.loads(line)["loss"] for line in (tmp_path / str(flag) / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line] for flag in (False, True)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert runs[0].last_eval["val_loss"] == pytest.approx(runs[1].last_eval["val_loss"], abs=1e-5)


def test_torch_compile_trains_the_same(shards, tmp_path):
    eager = pretrain(_cfg(shards, tmp_path / "eager", dropout=0.0, max_steps=3))
    compiled = pretrain(_cfg(shards, tmp_path / "compiled", dropout=0.0, max_steps=3, compile=True))
    read = lambda run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    losses = [[r["loss"] for r in read(run) if "loss" in r] for run in ("eager", "compiled")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-4)
    assert compiled.last_eval["val_loss"] == pytest.approx(eager.last_eval["val_loss"], abs=1e-4)
    assert [r for r in read("compiled") if r.get("event") == "compiled"][0]["compile_s"] > 0


def _flops(run):
    return [r["flops"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "flops" in r]


def test_a_flop_budget_stops_objectives_at_equal_compute(sentinel_shards, tmp_path):
    """Objectives with different FLOPs per step (a decoder's causal LM, an encoder-decoder's span corruption, UL2
    whose denoisers change the lengths) stop at the same training FLOPs, within one step; the schedule spans the
    steps the budget affords, and the run's draws are untouched by the estimate."""
    budget = 2e9
    steps = {}
    for objective in ("clm", "span", "ul2"):
        run = tmp_path / objective
        result = pretrain(_cfg(sentinel_shards, run, objective, max_steps=1000, max_flops=budget, eval_every=1000,
                               save_every=1000))
        flops = _flops(run)
        per_step = flops[0]  # log_every is 1
        assert flops[-1] >= budget - per_step and flops[-1] < budget + 1.5 * per_step, (objective, flops[-1])
        saved = json.loads((result.checkpoint / "training_state.json").read_text())
        assert saved["flops_seen"] == flops[-1] and result.step <= saved["config"]["train"]["max_steps"] + 1
        steps[objective] = result.step
    assert len(set(steps.values())) == 3  # different FLOPs a step, different step counts
    # the same run without a budget but its derived max_steps draws the same batches: same first-step loss
    cfg = config_from_checkpoint(tmp_path / "clm")
    plain = pretrain(_cfg(sentinel_shards, tmp_path / "plain", "clm", max_steps=cfg.train.max_steps, eval_every=1000,
                          save_every=1000))
    a, b = _tensors(plain.checkpoint), _tensors(next((tmp_path / "clm").glob("step-*")))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_save_at_flops_keeps_the_model_of_the_step_that_reaches_each_count(sentinel_shards, tmp_path):
    """train.save_at_flops: flops-<count>/ holds the weights of the first step whose FLOPs reach the count (those
    of a run stopped at that step), apart from the pruned step checkpoints; a run stopped between the counts and
    resumed keeps the same ones."""
    from lmlab.train.checkpoint import flops_dir

    counts = (4e8, 9e8)
    kw = dict(max_steps=1000, max_flops=1.2e9, eval_every=1000, save_every=2, keep_last=1, save_at_flops=counts)
    whole = pretrain(_cfg(sentinel_shards, tmp_path / "whole", "clm", **kw))
    flops = _flops(tmp_path / "whole")  # after each step (log_every is 1)
    for count in counts:
        step = next(i for i, f in enumerate(flops, 1) if f >= count)
        kept = tmp_path / "whole" / flops_dir(count)
        state = json.loads((kept / "training_state.json").read_text())
        assert (state["step"], state["flops_seen"]) == (step, flops[step - 1]) and step < whole.step
        stopped = pretrain(_cfg(sentinel_shards, tmp_path / f"stop-{count:g}", "clm", **kw), stop_after=step)
        a, b = load_file(str(kept / "model.safetensors")), load_file(str(stopped.checkpoint / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in b)
    split = tmp_path / f"stop-{counts[0]:g}"  # stopped where the first count was reached: resumed to the end
    pretrain(_cfg(sentinel_shards, split, "clm", **kw), resume=split)
    for count in counts:
        a, b = (load_file(str(run / flops_dir(count) / "model.safetensors")) for run in (tmp_path / "whole", split))
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "whole").iterdir() if p.is_dir()) == sorted([
        flops_dir(counts[0]), flops_dir(counts[1]), f"step-{whole.step:06d}"])


def test_a_flop_budget_resumes_bit_identically(sentinel_shards, tmp_path):
    kw = dict(max_steps=1000, max_flops=2e9, eval_every=1000, save_every=1000)
    whole = pretrain(_cfg(sentinel_shards, tmp_path / "whole", "clm", **kw))
    pretrain(_cfg(sentinel_shards, tmp_path / "split", "clm", **kw), stop_after=3)
    rest = pretrain(_cfg(sentinel_shards, tmp_path / "split", "clm", **kw), resume=tmp_path / "split")
    assert rest.step == whole.step and _flops(tmp_path / "split")[-1] == _flops(tmp_path / "whole")[-1]
    a, b = _tensors(whole.checkpoint), _tensors(rest.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_at_start_logs_the_initial_model_and_changes_nothing(shards, tmp_path):
    """train.eval_at_start evaluates before the first step (a step-0 record, as every later evaluation: the
    starting model's validation loss, near ln V for random weights) and leaves training exactly as without it."""
    import math

    with_start = pretrain(_cfg(shards, tmp_path / "a", eval_at_start=True))
    plain = pretrain(_cfg(shards, tmp_path / "b"))
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["step"] == 0 and "val_loss" in r)
    later = [r["val_loss"] for r in rows if r["step"] > 0 and "val_loss" in r]
    vocab = json.loads((shards / "manifest.json").read_text())["vocab_size"]
    assert abs(first["val_loss"] - math.log(vocab)) < 1.0 and first["val_loss"] > later[-1]
    assert with_start.step == plain.step
    a, b = _tensors(tmp_path / "a" / "step-000006"), _tensors(tmp_path / "b" / "step-000006")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
