"""Data parallelism: 2 processes under torchrun take the same steps as 1 process with the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ARGS = ["--data.seq_len", "32", "--train.max_steps", "3", "--train.warmup_steps", "1",
        "--train.lr", "1e-2", "--train.log_every", "1", "--train.eval_every", "3", "--train.eval_batches", "1",
        "--train.progress", "false", "--train.peak_flops", "1e11", "--train.grad_accum", "2"]


def _losses(run):
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("objective, preset", [("clm", "gpt2-tiny"), ("mlm", "bert-tiny"), ("span", "t5-tiny"),
                                               ("ul2", "llama-tiny"), ("electra", "bert-tiny"),
                                               ("bart", "t5-tiny"), ("fim", "gpt2-tiny"), ("prefix_lm", "gpt2-tiny")])
def test_two_processes_match_one(sentinel_shards, tmp_path, objective, preset):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [*ARGS, "--data.path", str(sentinel_shards), "--objective.name", objective, "--preset", preset]
    if objective == "electra":
        common += ["--model.lm_head", "false", "--model.mlm_transform", "false"]
    one = subprocess.run([sys.executable, "-m", "lmlab", "pretrain", *common, "--train.batch_size", "8",
                          "--train.out_dir", str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lmlab", "pretrain", *common, "--train.batch_size", "4",
                          "--train.out_dir", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 3
    assert a == pytest.approx(b, abs=1e-5)
    wa = load_file(str(tmp_path / "one" / "step-000003" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "step-000003" / "model.safetensors"))
    # The gradients agree to float rounding (summed in another order); Adam divides by their running RMS, which
    # for a near-zero gradient turns that rounding into up to ~1e-5 of a 1e-2 step.
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=1e-4, msg=name)
    state = json.loads((tmp_path / "two" / "step-000003" / "training_state.json").read_text())
    assert state["world_size"] == 2


@pytest.mark.parametrize("objective, preset", [("clm", "gpt2-tiny"), ("electra", "bert-tiny")])
def test_fsdp_matches_ddp_and_resumes(sentinel_shards, tmp_path, objective, preset):
    """fully_shard under torchrun: the losses of DDP, and a sharded run that saves and resumes exactly (ELECTRA: with
    its generator, which shares the model's embeddings, sharded at the root)."""
    import shutil

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [*ARGS, "--data.path", str(sentinel_shards), "--preset", preset, "--objective.name", objective,
              "--train.batch_size", "4", "--train.max_steps", "4", "--train.save_every", "2", "--train.keep_last", "5"]
    if objective == "electra":
        common += ["--model.lm_head", "false", "--model.mlm_transform", "false"]

    def torchrun(*args):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               "2", "-m", "lmlab", "pretrain", *args], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun(*common, "--train.out_dir", str(tmp_path / "ddp"))
    torchrun(*common, "--train.out_dir", str(tmp_path / "fsdp"), "--train.parallel", "fsdp")
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "fsdp"), abs=1e-5)
    a = load_file(str(tmp_path / "fsdp" / "step-000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "step-000004" / "model.safetensors"))
    for name in a:  # the sharded run saves whole tensors, under the same names
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-4, msg=name)
    # resume the sharded run from its step-2 checkpoint: the same step-4 weights and AdamW state
    (tmp_path / "again").mkdir()
    shutil.copytree(tmp_path / "fsdp" / "step-000002", tmp_path / "again" / "step-000002")
    torchrun("--resume", str(tmp_path / "again"), "--train.out_dir", str(tmp_path / "again"))
    own = ["objective.safetensors"] if objective == "electra" else []  # the generator and the binary head
    for file in ["model.safetensors", "optimizer.safetensors", *own]:
        x = load_file(str(tmp_path / "fsdp" / "step-000004" / file))
        y = load_file(str(tmp_path / "again" / "step-000004" / file))
        assert x.keys() == y.keys()
        for name in x:
            torch.testing.assert_close(x[name], y[name], rtol=0, atol=0, msg=name)


def test_fsdp_with_compile_trains_the_same(sentinel_shards, tmp_path):
    """train.compile on top of fully_shard: the sharded eager run's losses."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [*ARGS, "--data.path", str(sentinel_shards), "--preset", "gpt2-tiny", "--train.batch_size", "4",
              "--train.parallel", "fsdp", "--model.dropout", "0"]
    for name, extra in [("eager", []), ("compiled", ["--train.compile", "true"])]:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "lmlab", "pretrain", *common, *extra, "--train.out_dir", str(tmp_path / name)],
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == 3 and compiled == pytest.approx(eager, abs=1e-4)
