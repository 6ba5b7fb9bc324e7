"""The Hugging Face–style front door: lmlab.load, AutoTokenizer (parity with transformers), AutoModelFor*."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from tokenizers import processors

import lmlab
from lmlab import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer
from lmlab.auto import ModelKindError
from lmlab.config import load_config, model_preset
from lmlab.data import prepare
from lmlab.errors import TokenizerError
from lmlab.model import build_model
from lmlab.tokenizer import Tokenizer, train_tokenizer
from lmlab.train import pretrain, save_model_dir

ROOT = Path(__file__).resolve().parent.parent
# Each masked word is forced by the rest of its sentence (all sit at the same position, so the model must
# read the context, not just the position).
SENTENCES = {"the cat sat on the [MASK] .": "mat", "the dog lay in the [MASK] .": "sun",
             "a bird flew over the [MASK] .": "tree"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(tmp: Path, tokenizer: Tokenizer, docs: list[str], preset: str, steps: int, **model) -> Path:
    (tmp / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    prepare(tmp / "corpus.txt", tokenizer, tmp / "shards", valid_size=0.05, progress=False)
    cfg = load_config(None, {
        "preset": preset, "model": model, "data": {"path": str(tmp / "shards"), "seq_len": 16},
        "objective": {"name": "mlm", "mask_prob": 0.3},
        "train": {"out_dir": str(tmp / "run"), "batch_size": 16, "max_steps": steps, "warmup_steps": 5, "lr": 1e-2,
                  "eval_every": steps, "eval_batches": 2, "save_every": steps, "log_every": steps,
                  "peak_flops": 1e11, "progress": False}})
    return pretrain(cfg).checkpoint.parent


@pytest.fixture(scope="module")
def mlm_runs(tmp_path_factory, one_thread):
    """A tiny encoder trained with masked LM until it fills the sentences in (400 steps, ~4 s: every word right
    with a score of 0.83 or more in 8 of 8 seeds, where 200 steps missed a word in 3 of 11), and a decoder trained
    with masked LM for 2 steps (only its kind matters)."""
    rng = random.Random(0)
    docs = [s.replace("[MASK]", w) for s, w in (rng.choice(list(SENTENCES.items())) for _ in range(400))]
    tok = train_tokenizer(docs, kind="wordpiece", vocab_size=100, lowercase=True)
    encoder = _train(tmp_path_factory.mktemp("mlm"), tok, docs, "bert-tiny", 400, position="rotary", prenorm=True,
                     embed_norm=False, type_vocab_size=0, n_layers=1, d_ff=128)
    decoder = _train(tmp_path_factory.mktemp("mlm_decoder"), tok, docs, "gpt2-tiny", 2, n_layers=1)
    return encoder, decoder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer, one_thread):
    """Random models of each kind saved as lmlab checkpoints (config.json, model.safetensors, tokenizer)."""
    torch.manual_seed(0)
    out = {}
    V = tokenizer.vocab_size
    for name, cfg in [("encoder", model_preset("bert-tiny", vocab_size=V)),
                      ("decoder", model_preset("gpt2-tiny", vocab_size=V)),
                      ("seq2seq", model_preset("t5-tiny", vocab_size=V)),
                      ("headless", model_preset("bert-tiny", vocab_size=V, lm_head=False, mlm_transform=False))]:
        d = tmp_path_factory.mktemp(name)
        save_model_dir(d, build_model(cfg), tokenizer)
        out[name] = d
    return out


def test_the_issue_program_prints_the_masked_word(mlm_runs, capsys):
    run = mlm_runs[0]
    # The program as a transformers user writes it, with the import changed.
    tok = AutoTokenizer.from_pretrained(run)
    model = AutoModelForMaskedLM.from_pretrained(run)
    for text in SENTENCES:
        inputs = tok(text, return_tensors="pt")
        logits = model(**inputs).logits
        mask_index = (inputs.input_ids == tok.mask_token_id).nonzero()[0, 1]
        print(tok.decode(logits[0, mask_index].argmax()))
    assert capsys.readouterr().out.split() == list(SENTENCES.values())
    fill = lmlab.pipeline("fill-mask", model=run)
    for text, word in SENTENCES.items():
        best = fill(text)[0]
        assert best["token_str"] == word and best["score"] > 0.5
        assert best["sequence"] == text.replace("[MASK]", word).replace(" .", ".")  # WordPiece decoding
    # the model gives the true sentence a higher pseudo-log-likelihood than a wrong filling
    score = lmlab.pipeline("score", model=run)
    assert score("the cat sat on the mat .")["log_prob"] > score("the cat sat on the sun .")["log_prob"]


def bert_like(tmp: Path, tokenizer_docs: list[str]) -> Path:
    """A WordPiece tokenizer.json whose post-processor adds [CLS] ... [SEP], as a BERT checkpoint's has."""
    tok = train_tokenizer(tokenizer_docs, kind="wordpiece", vocab_size=200, lowercase=True)
    tok.tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.cls_id), ("[SEP]", tok.sep_id)])
    return tok.save(tmp)


def test_tokenizer_matches_transformers(tmp_path, docs):
    from transformers import PreTrainedTokenizerFast

    d = bert_like(tmp_path, docs)
    ours = AutoTokenizer.from_pretrained(d)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), pad_token="[PAD]", unk_token="[UNK]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    texts = ["The quick brown fox.", "a [MASK] model reads", "lazy", "Ünïcödé data jumps over the lazy dog twice"]
    calls = [dict(), dict(padding=True), dict(padding="longest", return_tensors="pt"),
             dict(padding="max_length", max_length=16, return_tensors="pt"),
             dict(truncation=True, max_length=5, padding=True), dict(add_special_tokens=False, padding=True),
             dict(truncation=True, max_length=3, add_special_tokens=False)]
    for side in ("right", "left"):
        ours.padding_side = theirs.padding_side = side
        for kwargs in calls:
            for inputs in (texts, texts[1]):
                if isinstance(inputs, str) and kwargs.get("padding") == "longest":
                    continue
                a, b = ours(inputs, **kwargs), theirs(inputs, **kwargs)
                for key in ("input_ids", "attention_mask"):
                    x, y = a[key], b[key]
                    assert (torch.equal(x, y) if torch.is_tensor(x) else x == y), (side, kwargs, key)
    ids = theirs(texts[1])["input_ids"]
    assert ours.encode(texts[1]) == theirs.encode(texts[1]) == ids
    assert torch.equal(ours.encode(texts[1], return_tensors="pt"), theirs.encode(texts[1], return_tensors="pt"))
    assert ours.tokenize(texts[0]) == theirs.tokenize(texts[0])
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        assert ours.batch_decode(torch.tensor([ids, ids]), skip_special_tokens=skip) == theirs.batch_decode(
            [ids, ids], skip_special_tokens=skip)
    assert ours.decode(torch.tensor(ids[1])) == theirs.decode(ids[1])  # a 0-D tensor, as argmax() gives
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids[1]) == theirs.convert_ids_to_tokens(ids[1])
    assert ours.convert_tokens_to_ids(["fox", "zzzz", "[MASK]"]) == theirs.convert_tokens_to_ids(
        ["fox", "zzzz", "[MASK]"])
    for role in ("mask", "pad", "cls", "sep", "unk"):
        assert getattr(ours, f"{role}_token") == getattr(theirs, f"{role}_token")
        assert getattr(ours, f"{role}_token_id") == getattr(theirs, f"{role}_token_id")
    assert (len(ours), ours.vocab_size) == (len(theirs), theirs.vocab_size)
    assert sorted(ours.all_special_ids) == sorted(set(theirs.all_special_ids))


def test_lmlab_tokenizers_add_no_special_tokens(tokenizer):
    tok = AutoTokenizer(tokenizer)
    text = "the quick [MASK] jumps"
    assert tok.num_special_tokens_to_add() == 0
    assert tok.encode(text) == tok.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    enc = tok([text, "a"], padding=True, return_tensors="pt")
    assert enc.input_ids.shape == (2, len(tokenizer.encode(text)))
    assert enc.input_ids[1, 1:].eq(tokenizer.pad_id).all() and enc.attention_mask.sum().item() == len(
        tokenizer.encode(text)) + 1
    assert (tok.mask_token, tok.mask_token_id) == ("[MASK]", tokenizer.mask_id)
    assert tok.bos_token_id == tokenizer.bos_id and tok.eos_token_id == tokenizer.eos_id


def test_tokenizer_errors(tokenizer):
    no_pad = AutoTokenizer(Tokenizer(tokenizer.tok, {r: t for r, t in tokenizer.roles.items() if r != "pad"}))
    with pytest.raises(TokenizerError, match="no pad token"):
        no_pad(["the quick fox", "a"], padding=True)
    assert no_pad(["a", "a"], padding=True)["input_ids"]  # nothing to pad: fine
    no_pad.pad_token = no_pad.eos_token  # the usual remedy
    assert no_pad(["the quick fox", "a"], padding=True)["input_ids"][1][-1] == tokenizer.eos_id
    tok = AutoTokenizer(tokenizer)
    with pytest.raises(TokenizerError, match="padding=True"):
        tok(["the quick fox", "a"], return_tensors="pt")
    with pytest.raises(TokenizerError, match="max_length"):
        tok("the quick fox", truncation=True)
    with pytest.raises(TokenizerError, match="padding must be"):
        tok("the", padding="yes")
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tok.pad_token = "<nope>"


def test_save_pretrained_round_trip(tmp_path, tokenizer, checkpoints):
    tok = AutoTokenizer(tokenizer, padding_side="left", model_max_length=64)
    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    assert (back.padding_side, back.model_max_length) == ("left", 64)
    assert back("the fox", padding="max_length", return_tensors="pt").input_ids.shape == (1, 64)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["mask_token"] == "[MASK]"
    # from a checkpoint: the context of a model with learned positions is the default max_length
    ckpt = AutoTokenizer.from_pretrained(checkpoints["decoder"])
    assert ckpt.model_max_length == model_preset("gpt2-tiny").max_seq_len
    assert ckpt.encode("the fox " * 300, truncation=True) == tokenizer.encode("the fox " * 300)[:ckpt.model_max_length]
    with pytest.raises(TokenizerError, match="does not exist"):
        AutoTokenizer.from_pretrained(tmp_path / "missing")


def test_auto_models_check_the_kind(checkpoints, mlm_runs):
    mlm_decoder = mlm_runs[1]
    allowed = {AutoModel: {"encoder", "decoder", "seq2seq", "headless", "mlm_decoder"},
               AutoModelForMaskedLM: {"encoder", "mlm_decoder"},
               AutoModelForCausalLM: {"decoder"},
               AutoModelForSeq2SeqLM: {"seq2seq"}}
    paths = {**checkpoints, "mlm_decoder": mlm_decoder}
    for cls, ok in allowed.items():
        for name, path in paths.items():
            if name in ok:
                model = cls.from_pretrained(path)
                assert not model.training
            else:
                with pytest.raises(ModelKindError):
                    cls.from_pretrained(path)
    with pytest.raises(ModelKindError, match="AutoModelForCausalLM"):
        AutoModelForMaskedLM.from_pretrained(checkpoints["decoder"])
    with pytest.raises(ModelKindError, match="no token head"):
        AutoModelForMaskedLM.from_pretrained(checkpoints["headless"])
    with pytest.raises(ModelKindError, match="masked LM"):
        AutoModelForCausalLM.from_pretrained(mlm_decoder)
    # a decoder trained with masked LM comes back attending both ways; lmlab.load gives it as built
    assert AutoModelForMaskedLM.from_pretrained(mlm_decoder).decoder.causal is False
    model, tok = lmlab.load(mlm_decoder)
    assert model.decoder.causal is True
    assert isinstance(tok, AutoTokenizer) and isinstance(tok.lmlab_tokenizer, Tokenizer)
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoModelForMaskedLM()


def test_load_gives_the_saved_weights(checkpoints):
    model, tok = lmlab.load(checkpoints["seq2seq"])
    again = AutoModelForSeq2SeqLM.from_pretrained(checkpoints["seq2seq"])
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert len(tok) == len(AutoTokenizer.from_pretrained(checkpoints["seq2seq"]))


def test_load_gives_the_callable_auto_tokenizer(checkpoints):
    """lmlab.load's tokenizer is the one the README shows beside it: callable with padding, as transformers'."""
    model, tok = lmlab.load(checkpoints["decoder"])
    same = AutoTokenizer.from_pretrained(checkpoints["decoder"])
    batch = tok(["the quick brown fox", "a"], padding=True, return_tensors="pt")
    assert torch.equal(batch.input_ids, same(["the quick brown fox", "a"], padding=True, return_tensors="pt").input_ids)
    assert tok.model_max_length == same.model_max_length == model.config.max_seq_len
    assert lmlab.score(model, tok, "the quick brown fox").num_tokens > 0  # lmlab's functions take it as it is


def test_batch_encoding_feeds_the_model_and_generate(checkpoints):
    tok = AutoTokenizer.from_pretrained(checkpoints["decoder"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(checkpoints["decoder"])
    prompts = ["the quick brown fox", "a"]
    batch = tok(prompts, padding=True, return_tensors="pt")
    out = lmlab.generate(model, **batch, max_new_tokens=4, pad_token_id=tok.pad_token_id)
    T = batch.input_ids.shape[1]
    for row, prompt in zip(out, prompts, strict=True):
        alone = lmlab.generate(model, **tok(prompt, return_tensors="pt"), max_new_tokens=4)
        assert row[T:].tolist() == alone[0, alone.shape[1] - 4:].tolist()
    enc = AutoModelForMaskedLM.from_pretrained(checkpoints["encoder"])
    right = AutoTokenizer.from_pretrained(checkpoints["encoder"])(prompts, padding=True, return_tensors="pt")
    logits = enc(**right).logits  # padding is masked: the short row's logits equal it alone
    assert torch.allclose(logits[1, :1], enc(torch.tensor([tok.encode("a")])).logits[0], atol=1e-5)


def test_import_lmlab_is_cheap():
    code = "import sys, lmlab; print('torch' in sys.modules, lmlab.__version__, 'load' in dir(lmlab))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.stdout.split() == ["False", version, "True"]  # no torch, and the version pyproject.toml says
    with pytest.raises(AttributeError, match="no attribute"):
        lmlab.nothing_here  # noqa: B018


def test_auto_model_for_sequence_classification(tmp_path, tokenizer, checkpoints):
    V = tokenizer.vocab_size
    torch.manual_seed(0)
    decoder = build_model(model_preset("gpt2-tiny", vocab_size=V, lm_head=False, num_labels=3)).eval()
    decoder.id2label = ["python", "libs", "net"]
    encoder = build_model(model_preset("bert-tiny", vocab_size=V, lm_head=False, mlm_transform=False, pooler=True,
                                       num_labels=2)).eval()
    for name, m in [("decoder", decoder), ("encoder", encoder)]:
        (tmp_path / name).mkdir()
        save_model_dir(tmp_path / name, m, tokenizer)
    model = lmlab.AutoModelForSequenceClassification.from_pretrained(tmp_path / "decoder")
    assert model.config.num_labels == 3 and model.id2label == ["python", "libs", "net"] and not model.training
    tok = AutoTokenizer.from_pretrained(tmp_path / "decoder")
    inputs = tok(["the quick brown fox", "a"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model.classify(model.hidden(inputs.input_ids, attention_mask=inputs.attention_mask),
                                attention_mask=inputs.attention_mask)
        alone = decoder.classify(decoder.hidden(tok("a", return_tensors="pt").input_ids))
    assert logits.shape == (2, 3) and torch.allclose(logits[1:], alone, atol=1e-5)
    # a checkpoint without label names gets Hugging Face's defaults; lmlab.load leaves them unset
    assert lmlab.AutoModelForSequenceClassification.from_pretrained(tmp_path / "encoder").id2label == [
        "LABEL_0", "LABEL_1"]
    assert lmlab.load(tmp_path / "encoder")[0].id2label is None
    for name in ("decoder", "encoder", "seq2seq"):
        with pytest.raises(ModelKindError, match="no classifier"):
            lmlab.AutoModelForSequenceClassification.from_pretrained(checkpoints[name])


def test_label_names_must_fit_the_classifier(tmp_path, tokenizer):
    from lmlab.errors import CheckpointError

    model = build_model(model_preset("gpt2-tiny", vocab_size=tokenizer.vocab_size, num_labels=2))
    model.id2label = ["neg", "pos"]
    save_model_dir(tmp_path, model, tokenizer)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    for bad in ({"0": "neg"}, {"0": "neg", "1": "pos", "2": "x"}, ["neg", "neg"]):
        (tmp_path / "config.json").write_text(json.dumps({**config, "id2label": bad}))
        with pytest.raises(CheckpointError, match="config.json: id2label must"):
            lmlab.load(tmp_path)


def test_auto_model_is_the_base_model_as_in_transformers(checkpoints):
    """transformers' AutoModel gives the model without its LM head: out[0] is the last hidden state."""
    tok = AutoTokenizer.from_pretrained(checkpoints["encoder"])
    model = AutoModel.from_pretrained(checkpoints["encoder"])
    full = AutoModelForMaskedLM.from_pretrained(checkpoints["encoder"])
    enc = tok(["the quick brown fox", "a"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out, ref = model(**enc), full(**enc)
    assert out.logits is None and out[0] is out.last_hidden_state
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)


def test_generate_reads_the_models_own_ids_as_transformers(checkpoints):
    """An encoder-decoder from AutoModelForSeq2SeqLM generates without decoder_start/pad/eos ids passed in."""
    from lmlab.objectives.base import decoder_start_id

    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoints["seq2seq"])
    tok = AutoTokenizer.from_pretrained(checkpoints["seq2seq"])
    enc = tok(["the quick brown fox", "a"], padding=True, return_tensors="pt")
    got = lmlab.generate(model, **enc, max_new_tokens=5)
    explicit = lmlab.generate(model, **enc, max_new_tokens=5, eos_token_id=tok.eos_token_id,
                              pad_token_id=tok.pad_token_id,
                              decoder_start_token_id=decoder_start_id(tok.lmlab_tokenizer, model))
    assert torch.equal(got, explicit) and got[0, 0] == decoder_start_id(tok.lmlab_tokenizer, model)
