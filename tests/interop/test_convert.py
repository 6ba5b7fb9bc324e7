"""Whole directories both ways (``convert_from_hf`` / ``convert_to_hf``): Hugging Face -> lmlab checkpoint ->
Hugging Face, with the tokenizer and the source config's other fields carried through."""

from __future__ import annotations

import json

import pytest
import torch
from hf_tiny import build, gpt2_files, ids, perturb, sentences

from lmlab.errors import InteropError
from lmlab.interop import convert_from_hf, convert_to_hf
from lmlab.train.checkpoint import load_model

transformers = pytest.importorskip("transformers")


def test_gpt2_directory_round_trip(tmp_path):
    src = tmp_path / "hf"
    n = gpt2_files(src)
    cfg = transformers.GPT2Config(vocab_size=n, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
                                  eos_token_id=0, task_specific_params={"text-generation": {"max_length": 20}})
    hf = build(transformers.GPT2LMHeadModel, cfg)
    hf.save_pretrained(src)
    ckpt = convert_from_hf(src, tmp_path / "lmlab")
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "lmlab"
    model, tok = load_model(ckpt)  # an ordinary lmlab checkpoint now
    theirs = transformers.GPT2Tokenizer.from_pretrained(src)
    text = sentences(1, seed=5)[0]
    assert tok.encode(text) == theirs(text)["input_ids"]
    x = torch.tensor([tok.encode(text)[:30]])
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(model(x).logits, ref, atol=1e-4, rtol=0)
        out = convert_to_hf(ckpt, tmp_path / "back")
        back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(back(x).logits, ref, atol=1e-4, rtol=0)
    assert back.config.task_specific_params == {"text-generation": {"max_length": 20}}
    assert transformers.AutoTokenizer.from_pretrained(out)(text, add_special_tokens=False)["input_ids"] == \
        tok.encode(text)


def test_t5_with_tokenizer_json_round_trip(tmp_path, tokenizer):
    """A T5 directory whose tokenizer.json is one lmlab trained (pad 0, eos 3)."""
    cfg = transformers.T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                num_heads=4, dropout_rate=0.0, feed_forward_proj="relu", pad_token_id=0,
                                eos_token_id=3, decoder_start_token_id=0)
    hf = perturb(transformers.T5ForConditionalGeneration(cfg))
    hf.save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    model, tok = load_model(convert_from_hf(tmp_path / "hf", tmp_path / "lmlab"))
    assert (tok.pad_id, tok.eos_id) == (0, 3) and model.config.head_rescale
    assert model.hf_config["decoder_start_token_id"] == 0  # the source config.json, kept by the lmlab checkpoint
    src, tgt = ids(2, 11), ids(2, 5, seed=1)
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(convert_to_hf(tmp_path / "lmlab", tmp_path / "back"))
    with torch.no_grad():
        ref = hf(input_ids=src, decoder_input_ids=tgt).logits
        torch.testing.assert_close(model(src, decoder_input_ids=tgt).logits, ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(back.eval()(input_ids=src, decoder_input_ids=tgt).logits, ref, atol=1e-4, rtol=0)
    assert (back.config.decoder_start_token_id, back.config.eos_token_id, back.config.pad_token_id) == (0, 3, 0)


def test_convert_needs_a_tokenizer_and_a_fresh_destination(tmp_path):
    cfg = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf")
    with pytest.raises(InteropError, match="has no tokenizer"):
        convert_from_hf(tmp_path / "hf", tmp_path / "lmlab")
    assert not (tmp_path / "lmlab").exists()
    gpt2_files(tmp_path / "hf")
    with pytest.raises(InteropError, match="already exists and is not empty"):
        convert_from_hf(tmp_path / "hf", tmp_path / "hf")


def test_the_convert_command(tmp_path, capsys):
    from lmlab.cli import main

    src = tmp_path / "hf"
    n = gpt2_files(src)
    cfg = transformers.GPT2Config(vocab_size=n, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
                                  eos_token_id=0)
    hf = build(transformers.GPT2LMHeadModel, cfg)
    hf.save_pretrained(src)
    assert main(["convert", "from-hf", str(src), str(tmp_path / "lmlab")]) == 0
    assert main(["convert", "to-hf", str(tmp_path / "lmlab"), str(tmp_path / "back")]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    x = torch.randint(0, n, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, hf(x).logits, atol=1e-4, rtol=0)
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["convert", "from-hf", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error:") and "config.json" in err
    assert main(["convert", "to-hf", str(tmp_path / "lmlab"), str(tmp_path / "back")]) == 2  # not empty: refused
