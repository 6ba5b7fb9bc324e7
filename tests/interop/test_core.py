"""The shared machinery (``lmlab/interop/core.py`` and the package API): weight files (sharded, pickled), bad
input named clearly, the family of an lmlab config, and ``load_model`` on a Hugging Face directory."""

from __future__ import annotations

import json

import pytest
import torch
from hf_tiny import V, build, ids
from safetensors.torch import load_file, save_file

from lmlab.config import model_preset
from lmlab.errors import CheckpointError, InteropError
from lmlab.interop import family_of, load_hf, save_hf
from lmlab.model import build_model
from lmlab.train.checkpoint import load_model

transformers = pytest.importorskip("transformers")


@pytest.fixture
def bert_dir(tmp_path):
    """A tiny BertForMaskedLM saved by transformers, and the model itself."""
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    hf = build(transformers.BertForMaskedLM, cfg)
    hf.save_pretrained(tmp_path / "bert")
    return tmp_path / "bert", hf


def _same_logits(model, hf):
    x = ids(2, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(x).logits, atol=1e-4, rtol=0)


def _edit(path, fn):
    tensors = load_file(path / "model.safetensors")
    fn(tensors)
    save_file(tensors, path / "model.safetensors")


def test_sharded_safetensors(bert_dir):
    path, hf = bert_dir
    tensors = load_file(path / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for file, part in shards.items():
        save_file({n: tensors[n] for n in part}, path / file)
    (path / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    model, _ = load_hf(path)
    _same_logits(model, hf)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InteropError, match="shard file model-00002-of-00002.safetensors, which is missing"):
        load_hf(path)


def test_index_naming_a_tensor_its_shard_lacks(bert_dir):
    path, _ = bert_dir
    (path / "model.safetensors").rename(path / "only.safetensors")
    weight_map = {n: "only.safetensors" for n in load_file(path / "only.safetensors")}
    weight_map["bert.extra.weight"] = "only.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(InteropError, match="tensor bert.extra.weight is in only.safetensors, but that file"):
        load_hf(path)


def test_pickle_only_with_permission(bert_dir):
    path, hf = bert_dir
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    with pytest.raises(InteropError, match="pytorch_model.bin.*allow_pickle=True"):
        load_hf(path)
    model, _ = load_hf(path, allow_pickle=True)
    _same_logits(model, hf)
    (path / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(InteropError, match="pytorch_model.bin cannot be read"):
        load_hf(path, allow_pickle=True)


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.pop("bert.encoder.layer.1.output.dense.bias"),
     "misses tensor.*bert.encoder.layer.1.output.dense.bias"),
    (lambda t: t.update({"cls.predictions.bias": torch.zeros(V + 1)}),
     r"tensor cls.predictions.bias has shape \(98,\), but config.json calls for \(97,\)"),
    (lambda t: t.update({"bert.encoder.layer.0.attention.self.key.weight": torch.zeros(32, 31)}),
     r"tensor bert.encoder.layer.0.attention.self.key.weight has shape \(32, 31\)"),
    (lambda t: t.update({"cls.seq_relationship.weight": torch.zeros(2, 32)}),
     "unexpected tensor.*cls.seq_relationship.weight"),
])
def test_bad_tensors_are_named(bert_dir, damage, message):
    path, _ = bert_dir
    _edit(path, damage)
    with pytest.raises(InteropError, match=message):
        load_hf(path)


def test_bad_directories_are_named(tmp_path, bert_dir):
    with pytest.raises(InteropError, match="has no config.json"):
        load_hf(tmp_path)
    path, _ = bert_dir
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    with pytest.raises(InteropError, match="model_type 'mamba' is not supported; lmlab imports bart, bert"):
        load_hf(path)
    (path / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(InteropError, match="position_embedding_type = 'relative_key' has no lmlab equivalent"):
        load_hf(path)
    (path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "hidden_size"}))
    with pytest.raises(InteropError, match="has no 'hidden_size'"):
        load_hf(path)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").unlink()
    with pytest.raises(InteropError, match="holds no weights"):
        load_hf(path)


def test_load_model_reads_hugging_face_directories(bert_dir):
    path, hf = bert_dir
    model, tokenizer = load_model(path)
    assert tokenizer is None and not model.training  # no tokenizer files in a bare save_pretrained
    _same_logits(model, hf)
    _edit(path, lambda t: t.pop("cls.predictions.bias"))
    with pytest.raises(CheckpointError, match="model_type 'bert'.*misses tensor"):  # InteropError is one
        load_model(path)


@pytest.mark.parametrize("preset, change, message", [
    ("bert-tiny", dict(position="rotary"), "model.position = 'rotary' \\(needs 'learned'\\).*closest family, BERT"),
    ("llama-tiny", dict(norm="layernorm"), "model.norm = 'layernorm' \\(needs 'rmsnorm'\\).*Llama"),
    ("gpt2-tiny", dict(n_kv_heads=2), "model.n_kv_heads = 2 has no Hugging Face GPT-2 equivalent"),
    ("t5-tiny", dict(bias=True), "model.bias = True \\(needs False\\).*T5"),
    ("gpt2-tiny", dict(activation="geglu"), "model.activation = 'geglu' has no Hugging Face GPT-2 equivalent"),
    ("bert-tiny", dict(mlm_transform=False), "model.mlm_transform = False has no Hugging Face BERT equivalent"),
    ("bert-tiny", dict(type_vocab_size=0), "model.type_vocab_size = 0 has no Hugging Face BERT equivalent"),
])
def test_configs_without_equivalent_name_the_option(tmp_path, preset, change, message):
    model = build_model(model_preset(preset, vocab_size=V, **change))
    with pytest.raises(InteropError, match=message):
        save_hf(model, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_families_of_presets():
    names = {p: family_of(model_preset(f"{p}-tiny", vocab_size=V)).name for p in ("bert", "gpt2", "llama", "t5")}
    assert names == {"bert": "BERT", "gpt2": "GPT-2", "llama": "Llama", "t5": "T5"}
    roberta = model_preset("bert-tiny", vocab_size=V, pos_offset=2, pos_pad_id=1)
    assert family_of(roberta).name == "RoBERTa"


def test_export_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    model = build_model(model_preset("gpt2-tiny", vocab_size=V))
    with pytest.raises(InteropError, match="already exists and is not empty"):
        save_hf(model, None, tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("change, message", [
    (dict(position="rotary", pos_offset=2), "model.pos_offset and model.pos_pad_id need position = 'learned'"),
    (dict(pos_pad_id=1), "model.pos_pad_id needs model.pos_offset >= 1"),
    (dict(pos_pad_id=V, pos_offset=V + 1), "must be a token id below vocab_size"),
    (dict(arch="decoder", pooler=True), "model.pooler is for encoders"),
    (dict(arch="encoder-decoder", num_labels=2), "classification needs an encoder"),
    (dict(lm_head=False), "model.lm_head is false: model.mlm_transform"),
    (dict(num_labels=-1), "model.num_labels must be >= 0"),
])
def test_hf_model_options_are_validated(change, message):
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        model_preset("bert-tiny", vocab_size=V, **change)


def test_headless_model_counts_and_runs():
    model = build_model(model_preset("bert-tiny", vocab_size=V, lm_head=False, mlm_transform=False, pooler=True,
                                     num_labels=3)).eval()
    x = ids(2, 10)
    assert model.head is None and model(x).logits is None
    assert model.classify(model.hidden(x)).shape == (2, 3)
    assert model.flops_per_token(10) > 0
    # with no head the token embedding is a lookup table too: left out with positions and token types
    assert model.num_params(non_embedding=False) - model.num_params() == (V + 256 + 2) * 64
