"""The bad-input catalogue: every user mistake the README's error promise covers, run through the ``lmlab``
command. Each must exit 2 with one ``lmlab: error:`` message that names the file or option at fault, without a
traceback, and leave every file that was there before as it was (nothing deleted, nothing overwritten).

A case is a function that sets its mistake up in its own directory and returns the command line and the name
its message must hold; ``CASES`` holds them all (the README counts them)."""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmlab.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--data.seq_len", "32", "--train.batch_size", "4", "--train.max_steps", "2", "--train.save_every", "2",
        "--train.eval_every", "2", "--train.eval_batches", "1", "--train.progress", "false",
        "--train.peak_flops", "1e11"]


@dataclass(frozen=True)
class World:
    """What the cases share (built once, and checked unchanged after every case)."""

    corpus: Path  # a text corpus
    shards: Path  # shards of it (holding their tokenizer.json)
    run: Path  # a tiny trained gpt2-tiny run: step-000002
    encoder: Path  # a tiny trained bert-tiny run (masked LM)
    task_tok: Path  # a WordPiece tokenizer for the fine-tuning examples
    reversal: Path  # seq2seq examples: train/valid/test.jsonl
    classes: Path  # classification examples: train/valid/test.jsonl
    mt: Path  # a gpt2-tiny run fine-tuned (1 step) on the seq2seq examples

    def dirs(self) -> list[Path]:
        return [self.corpus.parent, self.shards, self.run.parent, self.task_tok, self.reversal, self.classes]


@pytest.fixture(scope="module")
def world(tmp_path_factory, corpus_file, shards, task_tokenizer, reversal_data, class_data) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    for preset, name in (("gpt2-tiny", "run"), ("bert-tiny", "encoder")):
        more = ["--objective.name", "mlm"] if preset == "bert-tiny" else []
        assert main(["pretrain", "--preset", preset, *more, "--data.path", str(shards), "--train.out_dir",
                     str(root / name), *TINY]) == 0
    w = World(corpus_file, shards, root / "run", root / "encoder", task_tokenizer, reversal_data, class_data,
              root / "mt")
    assert main(_finetune(w, root, reversal_data, "--train.out_dir", str(w.mt), "--train.batch_size", "8",
                          "--finetune.eval_examples", "4")) == 0
    return w


Setup = Callable[[World, Path, pytest.MonkeyPatch], tuple[list[str], str]]
CASES: dict[str, Setup] = {}


def case(fn: Setup) -> Setup:
    CASES[fn.__name__] = fn
    return fn


def _copy_run(w: World, tmp: Path) -> Path:
    shutil.copytree(w.run, tmp / "run")
    return tmp / "run"


def _pretrain(w: World, tmp: Path, *more: str) -> list[str]:
    return ["pretrain", "--preset", "gpt2-tiny", "--data.path", str(w.shards), "--train.out_dir", str(tmp / "out"),
            *TINY, *more]


def _resume(run: Path, *more: str) -> list[str]:
    """Continue a copy of the shared run where it is (its config names the shared run's directory)."""
    return ["pretrain", "--resume", str(run), "--train.out_dir", str(run), "--train.max_steps", "3", *more]


def _finetune(w: World, tmp: Path, data: Path, *more: str, name: str = "seq2seq", preset: str = "gpt2-tiny"
              ) -> list[str]:
    return ["finetune", "--preset", preset, "--init", "none", "--finetune.tokenizer", str(w.task_tok),
            "--objective.name", name, "--data.train", str(data), "--data.seq_len", "12", "--data.decoder_seq_len",
            "8", "--train.out_dir", str(tmp / "ft"), "--train.max_steps", "1", "--train.progress", "false",
            "--train.peak_flops", "1e11", *more]


def _jsonl(path: Path, rows: list[dict], bad_line: str | None = None) -> Path:
    """The rows as JSON lines, with ``bad_line`` (raw text) as line 3."""
    lines = [json.dumps(r) for r in rows]
    if bad_line is not None:
        lines.insert(2, bad_line)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _examples(tmp: Path, rows: list[dict], bad_line: str | None = None) -> Path:
    return _jsonl(tmp / "train.jsonl", rows, bad_line)


def _digits(n: int = 40) -> list[dict]:
    return [{"source": f"{i % 10} {i % 7}", "target": f"{i % 7} {i % 10}"} for i in range(n)]


# ------------------------------------------------------------------------------------------------- corpora


@case
def missing_corpus(w, tmp, mp):
    return ["prepare", str(tmp / "none.txt"), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], "none.txt"


@case
def tokenizer_on_a_missing_corpus(w, tmp, mp):
    return ["tokenizer", "train", str(tmp / "none"), "--out", str(tmp / "tok")], str(tmp / "none")


@case
def empty_corpus(w, tmp, mp):
    (tmp / "empty.txt").write_text("")
    return ["prepare", str(tmp / "empty.txt"), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], "empty.txt"


@case
def tokenizer_on_an_empty_corpus(w, tmp, mp):
    (tmp / "empty.txt").write_text("")
    return ["tokenizer", "train", str(tmp / "empty.txt"), "--out", str(tmp / "tok")], "empty.txt"


@case
def binary_corpus(w, tmp, mp):
    (tmp / "data.txt").write_bytes(bytes(range(256)) * 40)
    return ["prepare", str(tmp / "data.txt"), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], "data.txt"


@case
def non_utf8_corpus(w, tmp, mp):
    (tmp / "latin1.txt").write_bytes(b"\xe9\xe8\xff\xfe " * 500)
    return ["prepare", str(tmp / "latin1.txt"), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], "latin1.txt"


@case
def tokenizer_on_a_binary_corpus(w, tmp, mp):
    (tmp / "data.txt").write_bytes(bytes(range(256)) * 40)
    return ["tokenizer", "train", str(tmp / "data.txt"), "--out", str(tmp / "tok")], "data.txt"


@case
def malformed_jsonl_corpus(w, tmp, mp):
    (tmp / "c.jsonl").write_text('{"text": "one"}\n{"text": "two"\n{"text": "three"}\n')
    return ["prepare", str(tmp / "c.jsonl"), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], "c.jsonl"


@case
def jsonl_corpus_without_text(w, tmp, mp):
    (tmp / "c.jsonl").write_text('{"body": "one"}\n{"body": "two"}\n')
    return ["prepare", str(tmp / "c.jsonl"), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], "c.jsonl"


@case
def missing_tokenizer(w, tmp, mp):
    return ["prepare", str(w.corpus), "--tokenizer", str(tmp / "tok"), "--out", str(tmp / "s")], str(tmp / "tok")


@case
def garbage_tokenizer(w, tmp, mp):
    (tmp / "tok").mkdir()
    (tmp / "tok" / "tokenizer.json").write_text("{not json")
    return ["prepare", str(w.corpus), "--tokenizer", str(tmp / "tok"), "--out", str(tmp / "s")], "tokenizer.json"


@case
def prepare_out_is_a_file(w, tmp, mp):
    (tmp / "s").write_text("mine")
    return ["prepare", str(w.corpus), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], str(tmp / "s")


@case
def prepare_into_shards_without_overwrite(w, tmp, mp):
    shutil.copytree(w.shards, tmp / "s")
    return ["prepare", str(w.corpus), "--tokenizer", str(w.shards), "--out", str(tmp / "s")], str(tmp / "s")


@case
def tokenizer_out_is_a_file(w, tmp, mp):
    (tmp / "tok").write_text("mine")
    return ["tokenizer", "train", str(w.corpus), "--out", str(tmp / "tok")], str(tmp / "tok")


# ------------------------------------------------------------------------------------------------- configs


@case
def unknown_override_key(w, tmp, mp):
    return _pretrain(w, tmp, "--train.bogus", "1"), "train.bogus"


@case
def unknown_override_section(w, tmp, mp):
    return _pretrain(w, tmp, "--trian.max_steps", "1"), "trian"


@case
def override_of_the_wrong_type(w, tmp, mp):
    return _pretrain(w, tmp, "--train.max_steps", "many"), "train.max_steps"


@case
def override_out_of_range(w, tmp, mp):
    return _pretrain(w, tmp, "--train.batch_size", "0"), "train.batch_size"


@case
def infinite_learning_rate(w, tmp, mp):
    return _pretrain(w, tmp, "--train.lr", "inf"), "train.lr"


@case
def sequence_longer_than_the_model(w, tmp, mp):
    return _pretrain(w, tmp, "--data.seq_len", "4096"), "max_seq_len"


@case
def override_without_a_value(w, tmp, mp):
    return _pretrain(w, tmp, "--train.max_steps"), "--train.max_steps"


@case
def unknown_preset(w, tmp, mp):
    return ["pretrain", "--preset", "gpt2-nano"], "gpt2-nano"


@case
def missing_config_file(w, tmp, mp):
    return ["pretrain", "--config", str(tmp / "none.toml")], "none.toml"


@case
def invalid_toml(w, tmp, mp):
    (tmp / "c.toml").write_text("[train\nmax_steps = 2\n")
    return ["pretrain", "--config", str(tmp / "c.toml")], "c.toml"


@case
def unknown_key_in_a_config(w, tmp, mp):
    (tmp / "c.toml").write_text('preset = "gpt2-tiny"\n[train]\nmax_step = 2\n')
    return ["pretrain", "--config", str(tmp / "c.toml")], "train.max_step"


@case
def unknown_section_in_a_config(w, tmp, mp):
    (tmp / "c.toml").write_text('preset = "gpt2-tiny"\n[training]\nmax_steps = 2\n')
    return ["pretrain", "--config", str(tmp / "c.toml")], "training"


@case
def wrong_type_in_a_config(w, tmp, mp):
    (tmp / "c.toml").write_text('preset = "gpt2-tiny"\n[train]\nmax_steps = "many"\n')
    return ["pretrain", "--config", str(tmp / "c.toml")], "train.max_steps"


@case
def out_of_range_in_a_config(w, tmp, mp):
    (tmp / "c.toml").write_text('preset = "gpt2-tiny"\n[model]\ndropout = 1.5\n')
    return ["pretrain", "--config", str(tmp / "c.toml")], "dropout"


@case
def section_not_a_table(w, tmp, mp):
    (tmp / "c.toml").write_text('preset = "gpt2-tiny"\ntrain = 3\n')
    return ["pretrain", "--config", str(tmp / "c.toml")], "[train]"


# ------------------------------------------------------------------------- objectives and architectures


@case
def causal_lm_on_an_encoder(w, tmp, mp):
    return _pretrain(w, tmp, "--preset", "bert-tiny", "--objective.name", "clm"), "encoder"


@case
def bart_on_a_decoder(w, tmp, mp):
    return _pretrain(w, tmp, "--objective.name", "bart"), "bart"


@case
def masked_lm_on_an_encoder_decoder(w, tmp, mp):
    return _pretrain(w, tmp, "--preset", "t5-tiny", "--objective.name", "mlm"), "encoder-decoder"


@case
def unknown_objective(w, tmp, mp):
    return _pretrain(w, tmp, "--objective.name", "gpt"), "objective.name"


@case
def pretrain_on_a_task(w, tmp, mp):
    return _pretrain(w, tmp, "--objective.name", "seq2seq"), "lmlab finetune"


@case
def span_corruption_without_sentinels(w, tmp, mp):
    return _pretrain(w, tmp, "--preset", "t5-tiny", "--objective.name", "span"), "sentinel"


@case
def electra_with_a_token_head(w, tmp, mp):
    return _pretrain(w, tmp, "--preset", "bert-tiny", "--objective.name", "electra"), "model.lm_head"


# --------------------------------------------------------------------------- tokenizers and shards


@case
def shards_of_another_tokenizer(w, tmp, mp):
    shutil.copytree(w.shards, tmp / "shards")
    assert main(["tokenizer", "train", str(w.corpus), "--out", str(tmp / "other"), "--vocab-size", "280"]) == 0
    shutil.copy(tmp / "other" / "tokenizer.json", tmp / "shards" / "tokenizer.json")
    return _pretrain(w, tmp, "--data.path", str(tmp / "shards")), "tokenizer"


@case
def resume_on_shards_of_another_tokenizer(w, tmp, mp):
    shutil.copytree(w.shards, tmp / "shards")
    tok = json.loads((tmp / "shards" / "tokenizer.json").read_text())
    tok["added_tokens"].append({**tok["added_tokens"][-1], "id": len(tok["model"]["vocab"]) + 50,
                                "content": "<other>"})
    (tmp / "shards" / "tokenizer.json").write_text(json.dumps(tok))
    manifest = json.loads((tmp / "shards" / "manifest.json").read_text())
    from lmlab.tokenizer import Tokenizer

    manifest["tokenizer_fingerprint"] = Tokenizer.load(tmp / "shards").sha256()
    (tmp / "shards" / "manifest.json").write_text(json.dumps(manifest))
    run = _copy_run(w, tmp)
    return _resume(run, "--data.path", str(tmp / "shards")), "another tokenizer"


@case
def raw_corpus_as_shards(w, tmp, mp):
    return _pretrain(w, tmp, "--data.path", str(w.corpus.parent)), "lmlab prepare"


@case
def missing_shards(w, tmp, mp):
    return _pretrain(w, tmp, "--data.path", str(tmp / "nowhere")), str(tmp / "nowhere")


@case
def damaged_shards(w, tmp, mp):
    shutil.copytree(w.shards, tmp / "shards")
    for f in (tmp / "shards" / "train").iterdir():
        if f.suffix == ".bin":
            f.write_bytes(f.read_bytes()[:7])
    return _pretrain(w, tmp, "--data.path", str(tmp / "shards")), str(tmp / "shards")


# ------------------------------------------------------------------------------------------- checkpoints


@case
def not_a_checkpoint(w, tmp, mp):
    (tmp / "empty").mkdir()
    return ["generate", str(tmp / "empty"), "hello"], str(tmp / "empty")


@case
def resume_from_no_checkpoint(w, tmp, mp):
    (tmp / "empty").mkdir()
    return ["pretrain", "--resume", str(tmp / "empty")], str(tmp / "empty")


@case
def truncated_weights(w, tmp, mp):
    f = _copy_run(w, tmp) / "step-000002" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return ["generate", str(tmp / "run"), "hello"], "model.safetensors"


@case
def garbage_weights(w, tmp, mp):
    (_copy_run(w, tmp) / "step-000002" / "model.safetensors").write_bytes(b"not a safetensors file")
    return ["generate", str(tmp / "run"), "hello"], "model.safetensors"


@case
def missing_weights(w, tmp, mp):
    (_copy_run(w, tmp) / "step-000002" / "model.safetensors").unlink()
    return ["score", str(tmp / "run"), "hello"], "model.safetensors"


@case
def garbage_config(w, tmp, mp):
    (_copy_run(w, tmp) / "step-000002" / "config.json").write_text("{oops")
    return ["generate", str(tmp / "run"), "hello"], "config.json"


@case
def config_of_the_wrong_shape(w, tmp, mp):
    path = _copy_run(w, tmp) / "step-000002" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "d_model": 48}))
    return ["generate", str(tmp / "run"), "hello"], "model.safetensors"


@case
def missing_tokenizer_in_a_checkpoint(w, tmp, mp):
    (_copy_run(w, tmp) / "step-000002" / "tokenizer.json").unlink()
    return ["generate", str(tmp / "run"), "hello"], "tokenizer"


@case
def resume_without_optimizer_state(w, tmp, mp):
    (_copy_run(w, tmp) / "step-000002" / "optimizer.safetensors").unlink()
    return _resume(tmp / "run"), "optimizer.safetensors"


@case
def resume_from_truncated_optimizer_state(w, tmp, mp):
    f = _copy_run(w, tmp) / "step-000002" / "optimizer.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    return _resume(tmp / "run"), "optimizer.safetensors"


@case
def resume_from_garbage_training_state(w, tmp, mp):
    (_copy_run(w, tmp) / "step-000002" / "training_state.json").write_text("[1, 2")
    return _resume(tmp / "run"), "training_state.json"


@case
def pickle_only_hugging_face_directory(w, tmp, mp):
    hf = tmp / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 300, "n_positions": 64,
                                                "n_embd": 32, "n_layer": 1, "n_head": 2}))
    (hf / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a pickle")
    return ["generate", str(hf), "hello"], "pytorch_model.bin"


@case
def convert_a_pickle_only_directory(w, tmp, mp):
    args, name = pickle_only_hugging_face_directory(w, tmp, mp)
    return ["convert", "from-hf", args[1], str(tmp / "out")], name


@case
def convert_into_a_non_empty_directory(w, tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")
    return ["convert", "to-hf", str(w.run), str(tmp / "out")], str(tmp / "out")


# ------------------------------------------------------------------------------------------- inference


@case
def prompt_longer_than_the_context(w, tmp, mp):
    return ["generate", str(w.run), "the " * 300], "context"


@case
def score_a_text_longer_than_an_encoder(w, tmp, mp):
    return ["score", str(w.encoder), "the " * 300], "positions"


@case
def empty_prompt(w, tmp, mp):
    return ["generate", str(w.run), ""], "empty"


@case
def score_an_empty_text(w, tmp, mp):
    return ["score", str(w.run), ""], "empty"


@case
def generate_with_an_encoder(w, tmp, mp):
    return ["generate", str(w.encoder), "the quick"], "decoder"


@case
def fill_mask_without_a_mask(w, tmp, mp):
    return ["fill-mask", str(w.encoder), "no mask here"], "mask token"


@case
def fill_mask_on_a_decoder(w, tmp, mp):
    return ["fill-mask", str(w.run), "the [MASK] fox"], "lmlab generate"


@case
def top_p_out_of_range(w, tmp, mp):
    return ["generate", str(w.run), "the", "--top-p", "1.5"], "top_p"


@case
def negative_max_new_tokens(w, tmp, mp):
    return ["generate", str(w.run), "the", "--max-new-tokens", "-1"], "max_new_tokens"


@case
def translate_with_a_pretrained_model(w, tmp, mp):
    return ["translate", str(w.run), "1 2 3"], "not a fine-tuned model"


@case
def classify_with_a_seq2seq_model(w, tmp, mp):
    return ["classify", str(w.mt), "1 2 3"], "not classification"


@case
def translate_negative_max_new_tokens(w, tmp, mp):
    return ["translate", str(w.mt), "1 2 3", "--max-new-tokens", "-3"], "max_new_tokens"


@case
def evaluate_batch_size_zero(w, tmp, mp):
    return ["evaluate", str(w.mt), "--data", str(w.reversal), "--batch-size", "0", "--out", str(tmp / "e")], \
        "batch_size"


@case
def evaluate_negative_limit(w, tmp, mp):
    return ["evaluate", str(w.mt), "--data", str(w.reversal), "--limit", "-1", "--out", str(tmp / "e")], "limit"


@case
def evaluate_on_another_task(w, tmp, mp):
    return ["evaluate", str(w.mt), "--data", str(w.classes), "--out", str(tmp / "e")], "test.jsonl:1"


@case
def evaluate_a_missing_split(w, tmp, mp):
    (tmp / "d").mkdir()
    _jsonl(tmp / "d" / "train.jsonl", _digits())
    return ["evaluate", str(w.mt), "--data", str(tmp / "d"), "--out", str(tmp / "e")], "test"


@case
def missing_prompt_file(w, tmp, mp):
    return ["generate", str(w.run), "--file", str(tmp / "prompts.txt")], "prompts.txt"


@case
def perplexity_without_a_file(w, tmp, mp):
    return ["score", str(w.run), "--perplexity"], "--file"


# ------------------------------------------------------------------------------------------ output dirs


def _read_only(path: Path, mp: pytest.MonkeyPatch) -> None:
    """Make ``path`` read-only. Permission bits do not bind root, so there Python's own file opening and
    directory making refuse to write under it too (as a read-only mount would)."""
    path.mkdir(exist_ok=True)
    path.chmod(0o555)
    if not os.access(path, os.W_OK):
        return
    inside = str(path.resolve()) + os.sep

    def refuse(target) -> None:
        if os.path.abspath(os.fspath(target)).startswith(inside):
            raise PermissionError(errno.EROFS, "Read-only file system", os.fspath(target))

    real_open, real_mkdir = io.open, os.mkdir

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def mkdir(target, *args, **kwargs):
        refuse(target)
        return real_mkdir(target, *args, **kwargs)

    mp.setattr(io, "open", open_)
    mp.setattr(builtins, "open", open_)
    mp.setattr(os, "mkdir", mkdir)


@case
def read_only_out_dir(w, tmp, mp):
    _read_only(tmp / "out", mp)
    return _pretrain(w, tmp), str(tmp / "out")


@case
def read_only_prepare_out(w, tmp, mp):
    _read_only(tmp / "ro", mp)
    return ["prepare", str(w.corpus), "--tokenizer", str(w.shards), "--out", str(tmp / "ro" / "s")], \
        str(tmp / "ro" / "s")


@case
def read_only_tokenizer_out(w, tmp, mp):
    _read_only(tmp / "tok", mp)
    return ["tokenizer", "train", str(w.corpus), "--out", str(tmp / "tok")], str(tmp / "tok")


@case
def full_disk(w, tmp, mp):
    from lmlab.train import checkpoint as ckpt

    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    mp.setattr(ckpt, "save_file", full)
    return _pretrain(w, tmp), "No space left on device"


@case
def out_dir_a_file(w, tmp, mp):
    (tmp / "out").write_text("mine")
    return _pretrain(w, tmp), "train.out_dir"


@case
def out_dir_holds_another_run(w, tmp, mp):
    run = _copy_run(w, tmp)
    return _pretrain(w, tmp, "--train.out_dir", str(run)), str(run)


@case
def resume_into_another_run(w, tmp, mp):
    other = _copy_run(w, tmp)
    return ["pretrain", "--resume", str(w.run), "--train.out_dir", str(other), "--train.max_steps", "3"], str(other)


@case
def finetune_into_another_run(w, tmp, mp):
    run = _copy_run(w, tmp)
    return _finetune(w, tmp, w.reversal, "--train.out_dir", str(run)), str(run)


@case
def overwrite_with_resume(w, tmp, mp):
    return _resume(_copy_run(w, tmp), "--overwrite"), "--overwrite"


@case
def finetune_overwrite_of_its_init(w, tmp, mp):
    run = _copy_run(w, tmp)
    return ["finetune", "--init", str(run), "--objective.name", "seq2seq", "--data.train", str(w.reversal),
            "--train.out_dir", str(run), "--overwrite"], "finetune.init"


# ------------------------------------------------------------------------------------------ fine-tuning


@case
def missing_source_field(w, tmp, mp):
    path = _examples(tmp, _digits(), '{"src": "1 2", "target": "2 1"}')
    return _finetune(w, tmp, path), f"{path}:3"


@case
def missing_target_field(w, tmp, mp):
    path = _examples(tmp, _digits(), '{"source": "1 2", "tgt": "2 1"}')
    return _finetune(w, tmp, path), f"{path}:3"


@case
def renamed_target_field(w, tmp, mp):
    return _finetune(w, tmp, w.reversal, "--data.target_field", "tgt"), "tgt"


@case
def missing_label_field(w, tmp, mp):
    path = _examples(tmp, [{"text": "red apple", "label": "fruit"}] * 30, '{"text": "a bus"}')
    return _finetune(w, tmp, path, name="classify", preset="bert-tiny"), f"{path}:3"


@case
def empty_target(w, tmp, mp):
    path = _examples(tmp, _digits(), '{"source": "1 2", "target": ""}')
    return _finetune(w, tmp, path), f"{path}:3"


@case
def target_not_a_string(w, tmp, mp):
    path = _examples(tmp, _digits(), '{"source": "1 2", "target": [2, 1]}')
    return _finetune(w, tmp, path), f"{path}:3"


@case
def malformed_jsonl_examples(w, tmp, mp):
    path = _examples(tmp, _digits(), '{"source": "1 2", "target": "2 1"')
    return _finetune(w, tmp, path), f"{path}:3"


@case
def missing_examples(w, tmp, mp):
    return _finetune(w, tmp, tmp / "none.jsonl"), "none.jsonl"


@case
def label_not_in_the_label_list(w, tmp, mp):
    (tmp / "d").mkdir()
    _jsonl(tmp / "d" / "train.jsonl", [{"text": "red apple", "label": "fruit"},
                                            {"text": "a blue bus", "label": "vehicle"}] * 20)
    _jsonl(tmp / "d" / "valid.jsonl", [{"text": "red apple", "label": "fruit"},
                                            {"text": "green", "label": "colour"}])
    return _finetune(w, tmp, tmp / "d", name="classify", preset="bert-tiny"), f"{tmp / 'd' / 'valid.jsonl'}:2"


@case
def classify_on_an_encoder_decoder(w, tmp, mp):
    return _finetune(w, tmp, w.classes, name="classify", preset="t5-tiny"), "encoder-decoder"


@case
def pretraining_objective_in_finetune(w, tmp, mp):
    return _finetune(w, tmp, w.reversal, "--objective.name", "clm"), "objective.name"


@case
def init_none_without_a_tokenizer(w, tmp, mp):
    args = _finetune(w, tmp, w.reversal)
    i = args.index("--finetune.tokenizer")
    return args[:i] + args[i + 2:], "finetune.tokenizer"


@case
def init_neither_lmlab_nor_hugging_face(w, tmp, mp):
    (tmp / "model").mkdir()
    (tmp / "model" / "weights.pt").write_bytes(b"\x80\x04 a pickle")
    return _finetune(w, tmp, w.reversal, "--init", str(tmp / "model")), f"finetune.init {tmp / 'model'}"


@case
def init_missing(w, tmp, mp):
    return _finetune(w, tmp, w.reversal, "--init", str(tmp / "none")), f"finetune.init {tmp / 'none'}"


@case
def init_pickle_only_hugging_face(w, tmp, mp):
    args, name = pickle_only_hugging_face_directory(w, tmp, mp)
    return _finetune(w, tmp, w.reversal, "--init", args[1]), name


@case
def tokenizer_without_an_eos_token(w, tmp, mp):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[UNK]", *"0123456789"])}
    tok = HFTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp / "tok").mkdir()
    tok.save(str(tmp / "tok" / "tokenizer.json"))
    return _finetune(w, tmp, w.reversal, "--finetune.tokenizer", str(tmp / "tok")), \
        f"finetune.tokenizer {tmp / 'tok'}"


# ------------------------------------------------------------------------------------------------- LoRA


def _lora_run(w: World, tmp: Path) -> tuple[Path, Path]:
    """A copy of the shared pretrained run as a base, and a LoRA run fine-tuned (1 step) from it."""
    base = shutil.copytree(w.run, tmp / "base")
    assert main(_finetune(w, tmp, w.reversal, "--init", str(base), "--finetune.lora.r", "2", "--train.out_dir",
                          str(tmp / "lora"), "--train.batch_size", "4", "--finetune.eval_examples", "2")) == 0
    return base, tmp / "lora"


@case
def lora_rank_below_zero(w, tmp, mp):
    return _finetune(w, tmp, _examples(tmp, _digits()), "--init", str(w.run), "--finetune.lora.r", "-1"), \
        "finetune.lora.r"


@case
def lora_unknown_target(w, tmp, mp):
    return _finetune(w, tmp, _examples(tmp, _digits()), "--init", str(w.run), "--finetune.lora.r", "2",
                     "--finetune.lora.targets", "q,v,w"), "finetune.lora.targets"


def _lora_on_a_changed_base(w: World, tmp: Path) -> tuple[Path, Path]:
    """A LoRA run whose base moved on (a weight changed) since the adapters were trained."""
    from safetensors.torch import load_file, save_file

    base, lora = _lora_run(w, tmp)
    weights = base / "step-000002" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["decoder.final_norm.weight"] += 0.01
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return base, lora


@case
def lora_adapters_on_another_base(w, tmp, mp):
    base, lora = _lora_on_a_changed_base(w, tmp)
    return ["generate", str(lora), "1 2", "--max-new-tokens", "2"], str(base)


@case
def lora_merge_onto_another_base(w, tmp, mp):
    base, lora = _lora_on_a_changed_base(w, tmp)
    return ["lora", "merge", str(lora), str(tmp / "merged")], str(base)


@case
def lora_resume_on_another_base(w, tmp, mp):
    base, lora = _lora_on_a_changed_base(w, tmp)
    return ["finetune", "--resume", str(lora), "--train.max_steps", "2", "--train.progress", "false"], str(base)


@case
def lora_adapters_whose_base_is_gone(w, tmp, mp):
    base, lora = _lora_run(w, tmp)
    base.rename(tmp / "moved")
    return ["generate", str(lora), "1 2", "--max-new-tokens", "2"], str(base)


@case
def lora_merge_without_adapters(w, tmp, mp):
    return ["lora", "merge", str(w.mt), str(tmp / "merged")], str(w.mt)


@case
def lora_merge_onto_an_existing_directory(w, tmp, mp):
    _, lora = _lora_run(w, tmp)
    (tmp / "merged").mkdir()
    (tmp / "merged" / "notes.txt").write_text("mine")
    return ["lora", "merge", str(lora), str(tmp / "merged")], str(tmp / "merged")


def _instructions(n: int = 40) -> list[dict]:
    return [{"prompt": r["source"], "completion": r["target"]} for r in _digits(n)]


def _sft(w: World, tmp: Path, line: str, *more: str) -> tuple[list[str], str]:
    """sft on prompt/completion rows with ``line`` as line 3."""
    path = _examples(tmp, _instructions(), line)
    return _finetune(w, tmp, path, *more, name="sft"), f"{path}:3"


SFT_LINES = {  # a bad line 3 among instructions, by case name
    "sft_row_without_prompt_or_messages": '{"question": "1 2", "completion": "2 1"}',
    "sft_row_without_completion": '{"prompt": "1 2"}',
    "sft_empty_completion": '{"prompt": "1 2", "completion": " "}',
    "sft_messages_not_a_list": '{"messages": "1 2"}',
    "sft_message_without_content": '{"messages": [{"role": "user", "content": "1 2"}, {"role": "assistant"}]}',
    "sft_message_without_role": '{"messages": [{"content": "1 2"}, {"role": "assistant", "content": "2 1"}]}',
    "sft_message_of_an_unknown_role": '{"messages": [{"role": "robot", "content": "1"}, '
                                      '{"role": "assistant", "content": "2"}]}',
    "sft_conversation_without_an_assistant_turn": '{"messages": [{"role": "user", "content": "1 2"}]}',
}
for _name, _line in SFT_LINES.items():
    CASES[_name] = lambda w, tmp, mp, line=_line: _sft(w, tmp, line)


def _tokenizer_refusing_system_turns(w: World, tmp: Path) -> Path:
    """A copy of the task tokenizer whose chat template raises on a system message."""
    shutil.copytree(w.task_tok, tmp / "tok")
    cfg = json.loads((tmp / "tok" / "tokenizer_config.json").read_text())
    cfg["chat_template"] = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                            "{{ raise_exception('no system turns') }}{% endif %}{{ m['content'] }}{% endfor %}")
    (tmp / "tok" / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tmp / "tok"


@case
def sft_chat_template_that_does_not_render(w, tmp, mp):
    return _sft(w, tmp, '{"messages": [{"role": "system", "content": "1"}, {"role": "user", "content": "1 2"}, '
                '{"role": "assistant", "content": "2 1"}]}',
                "--finetune.tokenizer", str(_tokenizer_refusing_system_turns(w, tmp)))


@case
def dpo_chat_template_that_does_not_render(w, tmp, mp):
    line = ('{"prompt": [{"role": "system", "content": "1"}, {"role": "user", "content": "1 2"}], '
            '"chosen": [{"role": "assistant", "content": "2 1"}], '
            '"rejected": [{"role": "assistant", "content": "1 2"}]}')
    tok = _tokenizer_refusing_system_turns(w, tmp)
    return _finetune(w, tmp, _examples(tmp, _preferences(), line), "--finetune.tokenizer", str(tok), name="dpo"), \
        f"{tmp / 'train.jsonl'}:3"


@case
def sft_on_an_encoder(w, tmp, mp):
    return _finetune(w, tmp, _examples(tmp, _instructions()), name="sft", preset="bert-tiny"), "encoder"


def _preferences(n: int = 40) -> list[dict]:
    return [{"prompt": r["source"], "chosen": r["target"], "rejected": r["source"]} for r in _digits(n)]


DPO_LINES = {  # a bad line 3 among preference pairs, by case name
    "dpo_row_without_prompt": '{"chosen": "2 1", "rejected": "1 2"}',
    "dpo_row_without_chosen": '{"prompt": "1 2", "rejected": "1 2"}',
    "dpo_row_without_rejected": '{"prompt": "1 2", "chosen": "2 1"}',
    "dpo_empty_chosen": '{"prompt": "1 2", "chosen": "", "rejected": "1 2"}',
    "dpo_empty_rejected": '{"prompt": "1 2", "chosen": "2 1", "rejected": "  "}',
    "dpo_conversation_without_an_assistant_turn": '{"prompt": [{"role": "user", "content": "1 2"}], '
                                                  '"chosen": [{"role": "user", "content": "2 1"}], '
                                                  '"rejected": [{"role": "assistant", "content": "1 2"}]}',
    "dpo_empty_assistant_turn": '{"prompt": [{"role": "user", "content": "1 2"}], '
                                '"chosen": [{"role": "assistant", "content": "2 1"}], '
                                '"rejected": [{"role": "assistant", "content": ""}]}',
    "dpo_conversational_prompt_with_text_answers": '{"prompt": [{"role": "user", "content": "1 2"}], '
                                                   '"chosen": "2 1", "rejected": "1 2"}',
}
for _name, _line in DPO_LINES.items():
    CASES[_name] = lambda w, tmp, mp, line=_line: (
        _finetune(w, tmp, _examples(tmp, _preferences(), line), name="dpo"), f"{tmp / 'train.jsonl'}:3")


# ------------------------------------------------------------------------------------------------ the test


def _snapshot(paths: list[Path]) -> dict[Path, tuple[int, str]]:
    """Every file under ``paths``: its modification time and a hash of its bytes."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return {f: (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest()) for f in files}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_naming_the_fault(name, world, tmp_path, monkeypatch, capsys):
    argv, named = CASES[name](world, tmp_path, monkeypatch)
    shared, own = _snapshot(world.dirs()), _snapshot([tmp_path])
    capsys.readouterr()
    try:
        code = main(argv)
    finally:
        monkeypatch.undo()
        for p in tmp_path.rglob("*"):  # (a read-only case's directory, so pytest can remove it)
            if p.is_dir():
                p.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("lmlab: error:") and "Traceback" not in err, err
    assert named in err, (named, err)
    assert _snapshot(world.dirs()) == shared
    after = _snapshot([tmp_path])
    assert {f: after.get(f) for f in own} == own  # nothing the user had is deleted or changed
