"""GPT-2 (``lmlab/interop/gpt2.py``): GPT2LMHeadModel in and out, tied and untied heads, padded batches."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, check_parity, ids, right_padding

from lmlab.config import model_preset
from lmlab.interop import load_hf, save_hf
from lmlab.model import build_model

transformers = pytest.importorskip("transformers")


def gpt2_config(**kw):
    return transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=32, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, **kw)


@pytest.mark.parametrize("tied, act", [(True, "gelu_new"), (False, "relu")])
def test_gpt2_lm_head_parity(tmp_path, tied, act):
    hf = build(transformers.GPT2LMHeadModel, gpt2_config(tie_word_embeddings=tied, activation_function=act))
    x, mask = right_padding(ids(3, 12), [12, 9, 5])
    model, _, back = check_parity(hf, transformers.AutoModelForCausalLM, tmp_path,
                                  lambda m: m(x, attention_mask=mask).logits,
                                  lambda m: m(x, attention_mask=mask).logits, where=mask.bool())
    # every layer's hidden states, the last one after the final norm, as transformers' output_hidden_states
    layers = lambda m: torch.stack(m(x, attention_mask=mask, output_hidden_states=True).hidden_states, dim=2)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(layers(model)[mask.bool()], layers(hf)[mask.bool()], atol=1e-4, rtol=0)
    assert model.config.tie_embeddings is tied and model.config.d_ff == 4 * 32
    assert (back.lm_head.weight is back.transformer.wte.weight) is tied


def test_gpt2_separate_head_equal_to_embedding_stays_tied(tmp_path):
    """transformers ties a head that a checkpoint stores as a copy of the embedding; so does lmlab."""
    hf = build(transformers.GPT2LMHeadModel, gpt2_config())
    hf.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()
    save_file(tensors, tmp_path / "model.safetensors")
    model, _ = load_hf(tmp_path)
    assert model.config.tie_embeddings and model.head.proj.weight is model.embed.weight


def test_lmlab_gpt2_preset_exports(tmp_path):
    """A model lmlab trains from the gpt2 preset loads in transformers with the same logits."""
    torch.manual_seed(0)
    model = build_model(model_preset("gpt2-tiny", vocab_size=V, max_seq_len=32)).eval()
    back = transformers.AutoModelForCausalLM.from_pretrained(save_hf(model, None, tmp_path)).eval()
    x = ids(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, model(x).logits, atol=1e-4, rtol=0)


def test_gpt2_sequence_classification_parity(tmp_path):
    """GPT2ForSequenceClassification in and out: the last real token of right- and left-padded rows."""
    names = {0: "python", 1: "libs", 2: "net"}
    hf = build(transformers.GPT2ForSequenceClassification,
               gpt2_config(pad_token_id=0, num_labels=3, id2label=names, label2id={v: k for k, v in names.items()}))
    x, mask = right_padding(ids(3, 12), [12, 9, 5])
    left, left_mask = x.clone(), mask.flip(1)  # the same rows moved to the right end
    for i, n in enumerate([12, 9, 5]):
        left[i] = torch.cat([x[i, n:], x[i, :n]])
    batches = [(x, mask), (left, left_mask)]
    theirs = lambda m: torch.cat([m(a, attention_mask=b).logits for a, b in batches])  # (6, 3)
    ours = lambda m: torch.cat([m.classify(m.hidden(a, attention_mask=b), attention_mask=b) for a, b in batches])
    model, _, back = check_parity(hf, transformers.AutoModelForSequenceClassification, tmp_path, theirs, ours)
    assert model.config.num_labels == 3 and not model.config.lm_head and model.head is None
    assert model.classifier.bias is None and model.id2label == ["python", "libs", "net"]
    assert back.config.id2label == names and back.config.pad_token_id == 0


def test_gpt2_export_refuses_what_it_cannot_hold():
    from lmlab.errors import InteropError

    with pytest.raises(InteropError, match="model.num_labels = 2 .*lm_head = false"):
        save_hf(build_model(model_preset("gpt2-tiny", vocab_size=V, num_labels=2)), None, "unused")
    with pytest.raises(InteropError, match="model.lm_head = False"):
        save_hf(build_model(model_preset("gpt2-tiny", vocab_size=V, lm_head=False)), None, "unused")
