"""Checkpoints: atomic writes, retention, strict loading, clear errors for incomplete or corrupt ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmlab.config import TrainConfig, model_preset
from lmlab.errors import CheckpointError
from lmlab.model import build_model
from lmlab.train import checkpoint as ckpt
from lmlab.train.optim import build_optimizer


@pytest.fixture
def trained(tokenizer):
    """A tiny model with one optimizer step taken, so AdamW has moments to save."""
    torch.manual_seed(0)
    model = build_model(model_preset("gpt2-tiny", vocab_size=tokenizer.vocab_size))
    optimizer = build_optimizer(model, TrainConfig())
    model(torch.randint(0, tokenizer.vocab_size, (2, 8))).logits.sum().backward()
    optimizer.step()
    return model, optimizer


def _save(run, step, model, optimizer, tokenizer, keep_last=2):
    gens = {"data": torch.Generator().manual_seed(1)}
    return ckpt.save_checkpoint(run, step, model, tokenizer, optimizer, gens, {"config": {}}, keep_last)


def test_round_trip_and_retention(tmp_path, trained, tokenizer):
    model, optimizer = trained
    for step in (1, 2, 3):
        path = _save(tmp_path, step, model, optimizer, tokenizer)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert ckpt.resolve_checkpoint(tmp_path) == path
    loaded, tok = ckpt.load_model(tmp_path)
    ids = torch.randint(0, tokenizer.vocab_size, (1, 10))
    assert torch.equal(loaded(ids).logits, model.eval()(ids).logits)
    assert tok.fingerprint == tokenizer.fingerprint
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "lmlab" and config["vocab_size"] == tokenizer.vocab_size
    # tied embeddings are stored once
    stored = load_file(str(path / "model.safetensors"))
    assert model.config.tie_embeddings and "head.proj.weight" in model.state_dict()
    assert "head.proj.weight" not in stored and len(stored) == len(model.state_dict()) - 1

    fresh = build_model(model.config)
    fresh_opt = build_optimizer(fresh, TrainConfig())
    gens = {"data": torch.Generator()}
    state = ckpt.load_training_state(path, fresh, fresh_opt, gens)
    assert state["step"] == 3
    assert torch.equal(gens["data"].get_state(), torch.Generator().manual_seed(1).get_state())
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(optimizer.state[p][key], fresh_opt.state[q][key])


def test_a_crash_while_writing_leaves_no_checkpoint(tmp_path, trained, tokenizer, monkeypatch):
    model, optimizer = trained
    good = _save(tmp_path, 1, model, optimizer, tokenizer)
    calls = []

    def failing_save(tensors, filename, metadata=None):
        calls.append(filename)
        if filename.endswith("optimizer.safetensors"):
            raise OSError("disk full")
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    with pytest.raises(CheckpointError, match="disk full.*intact"):  # a user's error (exit 2), not a traceback
        _save(tmp_path, 2, model, optimizer, tokenizer)
    assert calls and ckpt.list_checkpoints(tmp_path) == [good]
    assert ckpt.resolve_checkpoint(tmp_path) == good
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # and no temporary directory is left


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "model.safetensors").unlink(), "incomplete: model.safetensors is missing"),
    (lambda p: (p / "config.json").write_text("{not json"), "corrupt"),
    (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 20), "corrupt"),
    (lambda p: (p / "config.json").write_text(json.dumps({"model_type": "bert"})), "model_type"),
])
def test_damaged_checkpoints_are_named(tmp_path, trained, tokenizer, damage, message):
    model, optimizer = trained
    path = _save(tmp_path, 1, model, optimizer, tokenizer)
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_model(path)


def test_weights_are_loaded_strictly(tmp_path, trained, tokenizer):
    model, optimizer = trained
    path = _save(tmp_path, 1, model, optimizer, tokenizer)
    tensors = load_file(str(path / "model.safetensors"))
    name = next(iter(tensors))
    save_file({**tensors, name: torch.zeros(3, 3)}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"tensor {name} has shape"):
        ckpt.load_model(path)
    save_file({k: v for k, v in tensors.items() if k != name}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_model(path)
    save_file({**tensors, "extra.weight": torch.zeros(1)}, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected"):
        ckpt.load_model(path)


def test_resume_needs_the_optimizer_state(tmp_path, trained, tokenizer):
    model, optimizer = trained
    path = _save(tmp_path, 1, model, optimizer, tokenizer)
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing"):
        ckpt.load_training_state(path, model, optimizer, {})
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "nowhere")


def test_leftovers_of_killed_writes_are_cleaned_at_the_next_save(tmp_path, trained, tokenizer):
    """A kill while writing leaves .tmp-step-* (never a checkpoint); the next save removes those of processes that
    are gone (or of this one), leaves a live process's alone, and puts back a best/ a kill left moved aside."""
    import os
    import subprocess
    import sys

    model, optimizer = trained
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    live = str(os.getppid())
    for name in (f".tmp-step-000003-{dead}", f".tmp-step-000004-{os.getpid()}", f".tmp-best-{dead}",
                 f".tmp-step-000005-{live}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")  # half written
    (tmp_path / f".old-best-{dead}").mkdir()
    (tmp_path / f".old-best-{dead}" / "config.json").write_text('{"kept": true}')
    assert ckpt.list_checkpoints(tmp_path) == []
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        ckpt.resolve_checkpoint(tmp_path)
    path = _save(tmp_path, 6, model, optimizer, tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".tmp-step-000005-{live}", "best", path.name])
    assert json.loads((tmp_path / "best" / "config.json").read_text()) == {"kept": True}


@pytest.mark.parametrize("when", ["pruning", "re-saving"])
def test_a_kill_while_deleting_a_checkpoint_leaves_only_complete_ones(tmp_path, trained, tokenizer, monkeypatch,
                                                                       when):
    """A kill part-way through deleting a checkpoint (pruning by keep_last, or replacing one saved again at the
    same step) never leaves a partial step-N that counts; what it left is cleaned at the next save, and a step-N
    moved aside is put back."""
    model, optimizer = trained
    first = _save(tmp_path, 1, model, optimizer, tokenizer, keep_last=1 if when == "pruning" else 2)

    def killed(path, ignore_errors=False):  # deletes one file, then the process dies
        if (path / "tokenizer.json").exists():
            (path / "tokenizer.json").unlink()
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2 if when == "pruning" else 1, model, optimizer, tokenizer, keep_last=1)
    monkeypatch.undo()
    held = ckpt.list_checkpoints(tmp_path)
    assert held and all((p / "tokenizer.json").is_file() for p in held)
    for p in held:
        ckpt.load_model(p)
    ckpt.clean_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in held]
    assert first.name in [p.name for p in held] or when == "pruning"
