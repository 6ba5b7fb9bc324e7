"""RoBERTa (``lmlab/interop/roberta.py``): positions counted from non-padding tokens, offset pad_token_id + 1."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, check_parity, ids

from lmlab.model import positions_from_tokens

transformers = pytest.importorskip("transformers")

PAD = 1


def roberta_config(**kw):
    return transformers.RobertaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=34, type_vocab_size=1,
                                      pad_token_id=PAD, bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, **kw)


def padded():
    """Right padding, and a row with padding in front (positions must count real tokens only)."""
    x = ids(3, 14)
    mask = torch.ones_like(x)
    mask[1, 9:] = 0
    mask[2, :5] = 0
    return x.masked_fill(mask == 0, PAD), mask


def test_positions_from_tokens_match_transformers():
    x, _ = padded()
    ref = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(x, PAD)
    assert torch.equal(positions_from_tokens(x, PAD) + PAD + 1, ref)
    ref = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
        x, PAD, cache_length=3)
    assert torch.equal(positions_from_tokens(x, PAD, start=3) + PAD + 1, ref)


@pytest.mark.parametrize("tied", [True, False])
def test_roberta_masked_lm_parity(tmp_path, tied):
    hf = build(transformers.RobertaForMaskedLM, roberta_config(tie_word_embeddings=tied))
    x, mask = padded()
    run = lambda m: m(x, attention_mask=mask).logits
    model, _, _ = check_parity(hf, transformers.AutoModelForMaskedLM, tmp_path, run, run, where=mask.bool())
    c = model.config
    assert (c.pos_offset, c.pos_pad_id, c.max_seq_len, c.type_vocab_size, c.tie_embeddings) == (2, 1, 32, 1, tied)


def test_roberta_model_hidden_states(tmp_path):
    hf = build(transformers.RobertaModel, roberta_config())
    x, mask = padded()
    model, _, _ = check_parity(hf, transformers.AutoModel, tmp_path,
                               lambda m: m(x, attention_mask=mask).last_hidden_state,
                               lambda m: m(x, attention_mask=mask).last_hidden_state, where=mask.bool())
    assert model.head is None
