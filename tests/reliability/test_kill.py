"""Kill at random points: a pretraining run SIGKILLed again and again (at random moments, and while a checkpoint is
being written) and resumed each time ends bit for bit where an uninterrupted run ends; after every kill each
checkpoint present loads, and no temporary directory is ever taken for one."""

from __future__ import annotations

import multiprocessing
import os
import random
import time

import pytest
import torch
from safetensors.torch import load_file

from lmlab.cli import main
from lmlab.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")

KILLS = 12
STEPS = 150


def _args(shards, run) -> list[str]:
    return ["pretrain", "--preset", "gpt2-tiny", f"--data.path={shards}", "--data.seq_len=32",
            f"--train.out_dir={run}", f"--train.max_steps={STEPS}", "--train.batch_size=4", "--train.save_every=1",
            "--train.keep_last=3", "--train.eval_every=1000", "--train.eval_batches=1", "--train.log_every=1",
            "--train.warmup_steps=5", "--train.lr=1e-2", "--train.peak_flops=1e11", "--train.progress=false"]


def _child(args: list[str]) -> None:
    torch.set_num_threads(1)
    os._exit(main(args))


def _newest(run) -> int:
    found = ckpt.list_checkpoints(run)
    return int(found[-1].name.split("-")[1]) if found else -1


def _check_all_load(run) -> None:
    for path in ckpt.list_checkpoints(run):
        ckpt.load_model(path)
        assert ckpt.read_json(path / ckpt.STATE)["step"] == int(path.name.split("-")[1])
        ckpt._read_tensors(path / ckpt.OPTIMIZER)


def _tensors(path):
    return {**load_file(str(path / "model.safetensors")), **load_file(str(path / "optimizer.safetensors"))}


def test_killed_and_resumed_equals_uninterrupted(shards, tmp_path):
    assert main(_args(shards, tmp_path / "whole")) == 0
    run, rng, ctx = tmp_path / "killed", random.Random(0), multiprocessing.get_context("fork")
    kills = writing = 0
    while True:
        before = _newest(run)
        args = _args(shards, run) + (["--resume", str(run)] if before >= 0 else [])
        p = ctx.Process(target=_child, args=(args,))
        p.start()
        if kills >= KILLS:  # enough: let it finish
            p.join(300)
            assert p.exitcode == 0
            break
        # kill at a random moment after the first new checkpoint, or (every third time) while one is written
        while_writing = kills % 3 == 2
        deadline = time.monotonic() + 120
        while p.is_alive() and time.monotonic() < deadline:
            if while_writing and any(q.name.startswith(".tmp-step-") for q in run.iterdir()):
                break
            if not while_writing and _newest(run) > before:
                time.sleep(rng.uniform(0, 0.15))
                break
            time.sleep(0.002)
        p.kill()
        p.join()
        assert p.exitcode == -9, "the run ended before it was killed: raise STEPS"
        kills += 1
        writing += any(q.name.startswith(".tmp-step-") for q in run.iterdir())
        _check_all_load(run)
    assert writing >= 1  # at least one kill left a checkpoint half written
    assert not [q for q in run.iterdir() if q.name.startswith(".tmp")]  # cleaned up by later saves
    whole, killed = _tensors(tmp_path / "whole" / f"step-{STEPS:06d}"), _tensors(run / f"step-{STEPS:06d}")
    assert whole.keys() == killed.keys()
    for name in whole:
        assert torch.equal(whole[name], killed[name]), name
