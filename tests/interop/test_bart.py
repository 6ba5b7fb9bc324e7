"""BART (``lmlab/interop/bart.py``): learned positions with offset 2, layernorm_embedding, final_logits_bias,
scale_embedding, post-norm; padded encoder inputs with decoder inputs."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, check_parity, ids, right_padding

transformers = pytest.importorskip("transformers")


def bart_config(**kw):
    return transformers.BartConfig(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=3,
                                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                   decoder_ffn_dim=64, max_position_embeddings=40, dropout=0.0,
                                   attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=0,
                                   eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, **kw)


@pytest.mark.parametrize("scale, tied", [(False, True), (True, False)])
def test_bart_parity(tmp_path, scale, tied):
    hf = build(transformers.BartForConditionalGeneration, bart_config(scale_embedding=scale,
                                                                      tie_word_embeddings=tied))
    if not tied:  # an untied head; transformers 5 then unties the stacks' token embeddings too, lmlab shares one
        hf.model.encoder.embed_tokens.weight = hf.model.decoder.embed_tokens.weight = hf.model.shared.weight
    assert hf.final_logits_bias.abs().sum() > 0  # perturbed: a dropped bias would show
    src, mask = right_padding(ids(3, 15, seed=1), [15, 11, 3], pad_id=1)
    tgt, tgt_mask = right_padding(ids(3, 8, seed=2), [8, 8, 5], pad_id=1)
    run = lambda m: m(src, attention_mask=mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
    model, _, back = check_parity(hf, transformers.AutoModelForSeq2SeqLM, tmp_path, run, run,
                                  where=tgt_mask.bool())
    c = model.config
    assert (c.pos_offset, c.embed_scale, c.head_bias, c.tie_embeddings, c.decoder_layers) == (2, scale, True, tied, 3)
    assert back.config.decoder_start_token_id == 2 and back.config.forced_eos_token_id == 2  # kept from the source
    with torch.no_grad():
        torch.testing.assert_close(model.head.proj.bias, hf.final_logits_bias[0])
