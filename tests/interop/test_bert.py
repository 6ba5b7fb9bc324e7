"""BERT (``lmlab/interop/bert.py``): BertForMaskedLM, BertModel and BertForSequenceClassification."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, check_parity, ids, right_padding

from lmlab.config import model_preset
from lmlab.interop import save_hf
from lmlab.model import build_model

transformers = pytest.importorskip("transformers")


def bert_config(**kw):
    return transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32, type_vocab_size=2,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def batch():
    x, mask = right_padding(ids(3, 14), [14, 10, 4])
    types = torch.zeros_like(x)
    types[:, 7:] = 1
    return x, mask, types


@pytest.mark.parametrize("tied, act", [(True, "gelu"), (False, "gelu_new")])
def test_bert_masked_lm_parity(tmp_path, tied, act):
    hf = build(transformers.BertForMaskedLM, bert_config(tie_word_embeddings=tied, hidden_act=act))
    x, mask, types = batch()
    run = lambda m: m(x, attention_mask=mask, token_type_ids=types).logits
    model, _, _ = check_parity(hf, transformers.AutoModelForMaskedLM, tmp_path, run, run, where=mask.bool())
    c = model.config
    assert c.lm_head and c.mlm_transform and c.tie_embeddings is tied and not c.pooler


def test_bert_model_hidden_states_and_pooler(tmp_path):
    hf = build(transformers.BertModel, bert_config())
    x, mask, types = batch()
    theirs = lambda m: m(x, attention_mask=mask, token_type_ids=types).last_hidden_state
    ours = lambda m: m(x, attention_mask=mask, token_type_ids=types).last_hidden_state
    model, _, back = check_parity(hf, transformers.AutoModel, tmp_path, theirs, ours, where=mask.bool())
    # every layer's, as transformers' output_hidden_states: the embeddings, then each layer's output
    layers = lambda m: torch.stack(m(x, attention_mask=mask, token_type_ids=types,  # noqa: E731
                                     output_hidden_states=True).hidden_states, dim=2)  # (B, T, L + 1, D)
    with torch.no_grad():
        torch.testing.assert_close(layers(model)[mask.bool()], layers(hf)[mask.bool()], atol=1e-4, rtol=0)
    assert not model.config.lm_head and model.head is None and model.config.pooler
    with torch.no_grad():
        assert model(x, attention_mask=mask).logits is None  # no token head: hidden states only
        h = model.hidden(x, attention_mask=mask, token_type_ids=types)
        ref = hf(x, attention_mask=mask, token_type_ids=types).pooler_output
        torch.testing.assert_close(model.pooler(h[:, 0]), ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(back(x, attention_mask=mask, token_type_ids=types).pooler_output, ref,
                                   atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="no token head"):
        model.logits(h)


def test_bert_sequence_classification_parity(tmp_path):
    hf = build(transformers.BertForSequenceClassification,
               bert_config(num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"},
                           label2id={"neg": 0, "neutral": 1, "pos": 2}))
    x, mask, types = batch()
    theirs = lambda m: m(x, attention_mask=mask, token_type_ids=types).logits
    ours = lambda m: m.classify(m.hidden(x, attention_mask=mask, token_type_ids=types))
    model, _, back = check_parity(hf, transformers.AutoModelForSequenceClassification, tmp_path, theirs, ours)
    assert model.config.num_labels == 3 and model.config.pooler and not model.config.lm_head
    assert back.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}  # kept from the source config


def test_lmlab_bert_preset_exports(tmp_path):
    torch.manual_seed(0)
    model = build_model(model_preset("bert-tiny", vocab_size=V, max_seq_len=32)).eval()
    back = transformers.AutoModelForMaskedLM.from_pretrained(save_hf(model, None, tmp_path)).eval()
    x, mask, types = batch()
    with torch.no_grad():
        torch.testing.assert_close(back(x, attention_mask=mask, token_type_ids=types).logits[mask.bool()],
                                   model(x, attention_mask=mask, token_type_ids=types).logits[mask.bool()],
                                   atol=1e-4, rtol=0)


def test_lmlab_bert_classifier_label_names_round_trip(tmp_path, tokenizer):
    """An lmlab classifier with label names: saved, converted to Hugging Face (same logits, the names in its
    config.json) and imported back with its names."""
    from hf_tiny import perturb

    from lmlab.interop import convert_to_hf, load_hf
    from lmlab.train.checkpoint import load_model, save_model_dir

    torch.manual_seed(0)
    model = perturb(build_model(model_preset("bert-tiny", vocab_size=tokenizer.vocab_size, max_seq_len=32,
                                             lm_head=False, mlm_transform=False, pooler=True, num_labels=3)))
    model.id2label = ["python", "libs", "net"]
    (tmp_path / "ckpt").mkdir()
    save_model_dir(tmp_path / "ckpt", model, tokenizer)
    loaded, _ = load_model(tmp_path / "ckpt")
    assert loaded.id2label == ["python", "libs", "net"]
    hf = transformers.BertForSequenceClassification.from_pretrained(convert_to_hf(tmp_path / "ckpt",
                                                                                 tmp_path / "hf")).eval()
    assert hf.config.id2label == {0: "python", 1: "libs", 2: "net"}
    assert hf.config.label2id == {"python": 0, "libs": 1, "net": 2}
    x, mask, types = batch()
    with torch.no_grad():
        ours = model.classify(model.hidden(x, attention_mask=mask, token_type_ids=types), attention_mask=mask)
        torch.testing.assert_close(hf(x, attention_mask=mask, token_type_ids=types).logits, ours, atol=1e-4, rtol=0)
    back, _ = load_hf(tmp_path / "hf")
    assert back.id2label == ["python", "libs", "net"]
