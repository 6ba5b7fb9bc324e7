"""LoRA fine-tuning: fresh adapters change nothing, only adapters train, merging keeps the logits, PEFT loads the
adapters onto the Hugging Face export with the same logits, runs resume bit-identically, and the CLI's finetune
--finetune.lora.r / lora merge / generate work (bad input: tests/reliability/test_bad_input.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmlab.cli import main
from lmlab.config import load_config
from lmlab.model import build_model
from lmlab.model.lora import adapted
from lmlab.objectives import objective_tokenizer
from lmlab.tokenizer import Tokenizer
from lmlab.train.checkpoint import load_model, save_model_dir
from lmlab.train.finetune import finetune, initial_model
from lmlab.train.lora import apply_lora, merge
from lmlab.train.optim import build_optimizer

FAST = {"warmup_steps": "0", "log_every": "50", "progress": "false", "peak_flops": "1e11", "batch_size": "8",
        "lr": "1e-2"}


def _base(tmp_path, task_tokenizer, preset: str, name: str = "sft"):
    """A 'pretrained' tiny model (random weights) saved as an lmlab checkpoint, its tokenizer already holding what
    the objective adds (so fine-tuning grows nothing and the base is init's whole)."""
    cfg = load_config(None, {"preset": preset, "objective": {"name": name}})
    tok = objective_tokenizer(cfg, Tokenizer.load(task_tokenizer))
    torch.manual_seed(0)
    model = build_model(load_config(None, {"preset": preset, "model": {"vocab_size": tok.vocab_size}}).model)
    path = tmp_path / f"base-{preset}"
    path.mkdir()
    save_model_dir(path, model, tok)
    return path


def _cfg(base, data, out, steps=6, name="sft", **sections):
    values = {"objective": {"name": name}, "data": {"train": str(data), "seq_len": "24", "decoder_seq_len": "8"},
              "finetune": {"init": str(base), "metric": "loss", "lora": {"r": "4", "alpha": "8"}},
              "train": {"out_dir": str(out), "max_steps": str(steps), "eval_every": str(steps), "eval_batches": "1",
                        "save_every": str(steps), **FAST}}
    for section, extra in sections.items():
        values.setdefault(section, {}).update(extra)
    return load_config(None, values)


def _ids(model, n=10):
    return torch.randint(4, model.config.vocab_size, (2, n), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def gpt2_base(tmp_path_factory, task_tokenizer):
    return _base(tmp_path_factory.mktemp("lora"), task_tokenizer, "gpt2-tiny")


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory, gpt2_base, sft_data):
    out = tmp_path_factory.mktemp("lora-run") / "run"
    finetune(_cfg(gpt2_base, sft_data, out, finetune={"lora": {"r": "4", "alpha": "8", "targets": "all"}}))
    return out


@pytest.mark.parametrize("preset, targets", [("gpt2-tiny", "all"), ("llama-tiny", "q,v,gate"),
                                             ("t5-tiny", "q,k,v,o,up,down")])
def test_fresh_adapters_change_no_output(tmp_path, task_tokenizer, reversal_data, preset, targets):
    """B = 0 at the start: the model with adapters computes exactly what its base does."""
    base = _base(tmp_path, task_tokenizer, preset, "seq2seq")
    cfg = _cfg(base, reversal_data, tmp_path / "run", name="seq2seq",
               finetune={"lora": {"r": "4", "targets": targets}})
    model, _, report = initial_model(cfg, None)
    ids = _ids(model)
    extra = {"decoder_input_ids": ids} if model.arch == "encoder-decoder" else {}
    with torch.no_grad():
        before = model(ids, **extra).logits
        apply_lora(model, cfg, report)
        after = model(ids, **extra).logits
    assert adapted(model) and torch.equal(before, after)
    parts = {p for linear in adapted(model).values() for p in linear.lora.A}
    assert parts == {"llama-tiny": {"q", "v", "gate"}, "gpt2-tiny": {"qkv", "o", "up", "down"},
                     "t5-tiny": {"q", "k", "v", "o", "up", "down"}}[preset]


def test_only_adapters_train(tmp_path, task_tokenizer, reversal_data):
    """The base is frozen (out of the optimizer, bit-identical after steps); the adapters move."""
    base = _base(tmp_path, task_tokenizer, "llama-tiny", "seq2seq")
    cfg = _cfg(base, reversal_data, tmp_path / "run", name="seq2seq", train={"weight_decay": "0.1"},
               finetune={"lora": {"r": "4", "targets": "all"}})
    model, _, report = initial_model(cfg, None)
    apply_lora(model, cfg, report)
    frozen = {n: t.clone() for n, t in model.state_dict().items() if ".lora." not in n}
    adapters = {n: t.clone() for n, t in model.state_dict().items() if ".lora." in n}
    optimizer = build_optimizer(model, cfg.train)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for n, p in model.named_parameters() if ".lora." in n}
    for _ in range(3):
        model(_ids(model)).logits.square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    now = model.state_dict()
    assert all(torch.equal(now[n], t) for n, t in frozen.items())
    assert all(not torch.equal(now[n], t) for n, t in adapters.items())


def test_checkpoint_holds_adapters_only(gpt2_run, gpt2_base):
    step = gpt2_run / "step-000006"
    assert not (step / "model.safetensors").exists()
    config = json.loads((step / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["fan_in_fan_out"] and "transformer.h.0.attn.c_attn" in config["target_modules"]
    tensors = load_file(str(step / "adapter_model.safetensors"))
    assert "base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight" in tensors
    assert all(".lora_A." in k or ".lora_B." in k for k in tensors)
    record = json.loads((step / "config.json").read_text())["lora"]
    assert record["base"] == str(gpt2_base.resolve()) and len(record["base_fingerprint"]) == 64
    optimizer = load_file(str(step / "optimizer.safetensors"))
    assert {k.rsplit(".", 1)[0] for k in optimizer if not k.startswith("rng.")} == \
        {k.rsplit(".", 1)[0] for k in optimizer if ".lora." in k}


def test_merge_keeps_the_logits(gpt2_run, tmp_path):
    with_adapters, _ = load_model(gpt2_run, keep_adapters=True)
    assert adapted(with_adapters) and any(bool(linear.lora.B["qkv"].abs().sum())
                                          for linear in adapted(with_adapters).values() if "qkv" in linear.lora.B)
    merged, _ = load_model(gpt2_run)
    assert not adapted(merged)
    out = merge(gpt2_run, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    written, _ = load_model(out)
    ids = _ids(merged)
    with torch.no_grad():
        expected = with_adapters(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(written(ids).logits, merged(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_peft_loads_the_adapters_onto_the_export(tmp_path, task_tokenizer, sft_data, preset):
    """PEFT's LoRA on the `convert to-hf` export of the base, with our adapters, gives our logits."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from lmlab.interop import convert_to_hf

    base = _base(tmp_path, task_tokenizer, preset)
    finetune(_cfg(base, sft_data, tmp_path / "run", finetune={"lora": {"r": "4", "alpha": "8", "targets": "all"}}))
    ours, _ = load_model(tmp_path / "run", keep_adapters=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(convert_to_hf(base, tmp_path / "hf")).eval()
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "run" / "step-000006").eval()
    ids = _ids(ours)
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-4)
        merged = theirs.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-4)


def test_classifier_head_trains_beside_the_adapters(tmp_path, task_tokenizer, class_data):
    base = _base(tmp_path, task_tokenizer, "gpt2-tiny", "classify")
    finetune(_cfg(base, class_data, tmp_path / "run", name="classify"))
    step = tmp_path / "run" / "step-000006"
    config = json.loads((step / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["score"] and config["task_type"] == "SEQ_CLS"
    assert "base_model.model.score.weight" in load_file(str(step / "adapter_model.safetensors"))
    model, _ = load_model(step)
    assert model.id2label == ["colour", "fruit", "vehicle"] and model.classifier is not None


def test_resumes_bit_identically(tmp_path, gpt2_base, sft_data):
    extra = dict(model={"dropout": "0.1"}, finetune={"lora": {"r": "4", "dropout": "0.1", "targets": "q,k,v,up,down"}},
                 train={"grad_accum": "2", "save_every": "4", "keep_last": "5", "eval_every": "4"})
    finetune(_cfg(gpt2_base, sft_data, tmp_path / "a", steps=8, **extra))
    finetune(_cfg(gpt2_base, sft_data, tmp_path / "b", steps=8, **extra), stop_after=4)
    finetune(_cfg(gpt2_base, sft_data, tmp_path / "b", steps=8, **extra), resume=tmp_path / "b")
    for file in ("adapter_model.safetensors", "optimizer.safetensors"):
        a, b = (load_file(str(tmp_path / r / "step-000008" / file)) for r in ("a", "b"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (file, k)


def test_cli_finetune_merge_generate(tmp_path, gpt2_base, sft_data, capsys):
    run, merged = tmp_path / "sft-lora", tmp_path / "sft-merged"
    args = ["finetune", "--config", "configs/sft.toml", "--init", str(gpt2_base), "--finetune.lora.r", "4",
            "--data.train", str(sft_data), "--data.seq_len", "24", "--train.out_dir", str(run),
            "--train.max_steps", "3", "--train.eval_every", "3", "--train.eval_batches", "1",
            "--train.save_every", "3", "--train.warmup_steps", "0", "--train.progress", "false",
            "--train.peak_flops", "1e11", "--objective.packing", "false"]
    assert main(args) == 0
    assert "LoRA r=4" in capsys.readouterr().out
    assert main(["lora", "merge", str(run), str(merged)]) == 0
    assert (merged / "model.safetensors").is_file()
    assert main(["generate", str(run), "1 2 3", "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert main(["generate", str(merged), "1 2 3", "--max-new-tokens", "3", "--temperature", "0"]) == 0
    first, second = capsys.readouterr().out.strip().splitlines()[-2:]
    assert first == second


def test_seq2seq_adapters_on_an_encoder_decoder(tmp_path, task_tokenizer, reversal_data):
    """LoRA on T5 with seq2seq, self- and cross-attention targeted: the checkpoint holds only the adapters in PEFT's
    seq2seq layout, they moved, merging keeps the logits, and PEFT loads them onto the export with our logits."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from lmlab.interop import convert_to_hf

    base = _base(tmp_path, task_tokenizer, "t5-tiny", "seq2seq")
    finetune(_cfg(base, reversal_data, tmp_path / "run", name="seq2seq",
                  finetune={"lora": {"r": "4", "alpha": "8", "targets": "q,k,v,o"}}))
    step = tmp_path / "run" / "step-000006"
    assert not (step / "model.safetensors").exists()
    config = json.loads((step / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    tensors = load_file(str(step / "adapter_model.safetensors"))
    assert "base_model.model.decoder.block.0.layer.1.EncDecAttention.q.lora_A.weight" in tensors
    assert all(".lora_A." in k or ".lora_B." in k for k in tensors)
    assert all(t.abs().sum() > 0 for k, t in tensors.items() if ".lora_B." in k)  # trained from B = 0
    ours, _ = load_model(tmp_path / "run", keep_adapters=True)
    merged, _ = load_model(tmp_path / "run")
    assert adapted(ours) and not adapted(merged)
    ids, labels = _ids(ours), _ids(ours, 6)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(convert_to_hf(base, tmp_path / "hf")).eval()
    theirs = peft.PeftModel.from_pretrained(hf, step).eval()
    with torch.no_grad():
        expected = ours(ids, decoder_input_ids=labels).logits
        torch.testing.assert_close(merged(ids, decoder_input_ids=labels).logits, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(theirs(input_ids=ids, decoder_input_ids=labels).logits, expected,
                                   atol=1e-5, rtol=1e-4)
