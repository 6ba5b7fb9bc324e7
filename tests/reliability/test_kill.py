"""Kill at random points: a pretraining run and a fine-tuning run, SIGKILLed again and again (at random moments, and
while a checkpoint is being written) and resumed each time, end bit for bit where an uninterrupted run ends; after
every kill each checkpoint present loads, and no temporary directory is ever taken for one."""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmlab.cli import main
from lmlab.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")

KILLS = 12
STEPS = 150
# every run: a checkpoint each step, the newest 3 kept, a line logged each step, no progress bar
FREQUENT = [f"--train.max_steps={STEPS}", "--train.save_every=1", "--train.keep_last=3", "--train.log_every=1",
            "--train.warmup_steps=5", "--train.lr=1e-2", "--train.peak_flops=1e11", "--train.progress=false"]


def _child(args: list[str]) -> None:
    torch.set_num_threads(1)
    os._exit(main(args))


def _newest(run: Path) -> int:
    found = ckpt.list_checkpoints(run)
    return int(found[-1].name.split("-")[1]) if found else -1


def _writing(run: Path, pid: int) -> bool:
    """Whether process ``pid`` is writing a checkpoint (or best/): its temporary directory is there."""
    return any((m := ckpt.TEMP_DIR.match(q.name)) and int(m.group(1)) == pid for q in run.iterdir())


def _check_all_load(run: Path) -> None:
    for path in ckpt.list_checkpoints(run):
        ckpt.load_model(path)
        assert ckpt.read_json(path / ckpt.STATE)["step"] == int(path.name.split("-")[1])
        ckpt._read_tensors(path / ckpt.OPTIMIZER)
    if (run / ckpt.BEST).is_dir():
        ckpt.load_model(run / ckpt.BEST)


def _tensors(path: Path, files: tuple[str, ...] = ("model.safetensors", "optimizer.safetensors")):
    return {f"{f}:{k}": t for f in files for k, t in load_file(str(path / f)).items()}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def run_killed(args: list[str], run: Path, seed: int = 0) -> int:
    """Run ``lmlab ARGS`` (which writes to ``run``) in a child process, SIGKILL it ``KILLS`` times (at a random
    moment after its first new checkpoint, or every third time while a checkpoint is being written) and start it
    again with ``--resume run`` each time, then let it finish. After every kill each checkpoint present loads; at
    the end no temporary file or directory is left. Returns how many kills left a write half done."""
    rng, ctx = random.Random(seed), multiprocessing.get_context("fork")
    kills = writing = 0
    while True:
        before = _newest(run)
        p = ctx.Process(target=_child, args=(args + (["--resume", str(run)] if before >= 0 else []),))
        p.start()
        if kills >= KILLS:  # enough: let it finish
            p.join(300)
            assert p.exitcode == 0
            break
        while_writing = kills % 3 == 2
        deadline = time.monotonic() + 120
        while p.is_alive() and time.monotonic() < deadline:
            if while_writing and run.is_dir() and _writing(run, p.pid):
                break
            if not while_writing and _newest(run) > before:
                time.sleep(rng.uniform(0, 0.15))
                break
            time.sleep(0.002)
        p.kill()
        p.join()
        assert p.exitcode == -9, "the run ended before it was killed: raise STEPS"
        kills += 1
        writing += _writing(run, p.pid)
        _check_all_load(run)
    assert not [q for q in run.iterdir() if ckpt.TEMP_DIR.match(q.name) or ckpt.TEMP_FILE.match(q.name)]
    return writing


def test_pretraining_killed_and_resumed_equals_uninterrupted(shards, tmp_path):
    def args(run: Path) -> list[str]:
        return ["pretrain", "--preset", "gpt2-tiny", f"--data.path={shards}", "--data.seq_len=32",
                f"--train.out_dir={run}", "--train.batch_size=4", "--train.eval_every=1000",
                "--train.eval_batches=1", *FREQUENT]

    assert main(args(tmp_path / "whole")) == 0
    assert run_killed(args(tmp_path / "killed"), tmp_path / "killed") >= 1  # a kill left a checkpoint half written
    last = f"step-{STEPS:06d}"
    _assert_equal(_tensors(tmp_path / "whole" / last), _tensors(tmp_path / "killed" / last))


def test_finetuning_killed_and_resumed_equals_uninterrupted(task_tokenizer, reversal_data, tmp_path):
    """Fine-tuning seq2seq on a decoder with dropout, evaluating (and writing best/) every 10 steps: the last
    checkpoint and best/ equal the uninterrupted run's."""
    def args(run: Path) -> list[str]:
        return ["finetune", "--preset", "gpt2-tiny", "--init", "none", f"--finetune.tokenizer={task_tokenizer}",
                "--objective.name", "seq2seq", f"--data.train={reversal_data}", "--data.seq_len=12",
                "--data.decoder_seq_len=8", "--model.dropout=0.1", f"--train.out_dir={run}", "--train.batch_size=8",
                "--train.eval_every=10", "--train.eval_batches=1", "--finetune.metric=loss", *FREQUENT]

    assert main(args(tmp_path / "whole")) == 0
    assert run_killed(args(tmp_path / "killed"), tmp_path / "killed", seed=1) >= 1
    last = f"step-{STEPS:06d}"
    _assert_equal(_tensors(tmp_path / "whole" / last), _tensors(tmp_path / "killed" / last))
    _assert_equal(_tensors(tmp_path / "whole" / "best", ("model.safetensors",)),
                  _tensors(tmp_path / "killed" / "best", ("model.safetensors",)))
