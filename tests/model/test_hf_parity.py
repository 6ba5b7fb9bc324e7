"""Parity with Hugging Face ``transformers``: tiny random HF models, weights copied into ours, same logits.

These pin the options (norm placement, activations, rotary convention, relative bias, heads) to what the
real checkpoints need. The weight copying is written out here; ``lmlab.interop`` will own it later.
"""

from __future__ import annotations

import pytest
import torch

from lmlab.config import model_preset
from lmlab.model import build_model

transformers = pytest.importorskip("transformers")

V = 97


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    assert dst.shape == src.shape, (dst.shape, src.shape)
    dst.copy_(src)


def _load(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` into ``model`` by name; every parameter of ours must be covered."""
    own = dict(model.named_parameters())
    assert set(tensors) == set(own), (sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own)))
    with torch.no_grad():
        for name, t in tensors.items():
            _copy(own[name], t)


def _ids(B: int = 2, T: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_gpt2_parity():
    hf_cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0,
                                     eos_token_id=0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = build_model(model_preset("gpt2-tiny", vocab_size=V, max_seq_len=64)).eval()
    sd = hf.state_dict()
    t = {"embed.weight": sd["transformer.wte.weight"], "decoder.pos_emb.weight": sd["transformer.wpe.weight"],
         "decoder.final_norm.weight": sd["transformer.ln_f.weight"],
         "decoder.final_norm.bias": sd["transformer.ln_f.bias"]}
    for i in range(2):
        h, o = f"transformer.h.{i}.", f"decoder.layers.{i}."
        for ours_name, hf_name in [("attn_norm", "ln_1"), ("mlp_norm", "ln_2")]:
            t[o + ours_name + ".weight"] = sd[h + hf_name + ".weight"]
            t[o + ours_name + ".bias"] = sd[h + hf_name + ".bias"]
        for ours_name, hf_name in [("attn.qkv", "attn.c_attn"), ("attn.o", "attn.c_proj"),
                                   ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")]:
            t[o + ours_name + ".weight"] = sd[h + hf_name + ".weight"].t()  # Conv1D stores (in, out)
            t[o + ours_name + ".bias"] = sd[h + hf_name + ".bias"]
    _load(ours, t)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=1e-4)


def test_bert_parity():
    hf_cfg = transformers.BertConfig(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, max_position_embeddings=64, type_vocab_size=2,
                                     hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_cfg).eval()
    ours = build_model(model_preset("bert-tiny", vocab_size=V, max_seq_len=64)).eval()
    sd = hf.state_dict()
    e = "bert.embeddings."
    t = {"embed.weight": sd[e + "word_embeddings.weight"],
         "encoder.pos_emb.weight": sd[e + "position_embeddings.weight"],
         "encoder.type_emb.weight": sd[e + "token_type_embeddings.weight"],
         "encoder.embed_norm.weight": sd[e + "LayerNorm.weight"],
         "encoder.embed_norm.bias": sd[e + "LayerNorm.bias"],
         "head.transform.0.weight": sd["cls.predictions.transform.dense.weight"],
         "head.transform.0.bias": sd["cls.predictions.transform.dense.bias"],
         "head.transform.2.weight": sd["cls.predictions.transform.LayerNorm.weight"],
         "head.transform.2.bias": sd["cls.predictions.transform.LayerNorm.bias"],
         "head.proj.bias": sd["cls.predictions.bias"]}
    for i in range(2):
        h, o = f"bert.encoder.layer.{i}.", f"encoder.layers.{i}."
        for p in ("weight", "bias"):
            qkv = [sd[h + f"attention.self.{n}.{p}"] for n in ("query", "key", "value")]
            t[o + f"attn.qkv.{p}"] = torch.cat(qkv)
            t[o + f"attn.o.{p}"] = sd[h + f"attention.output.dense.{p}"]
            t[o + f"attn_norm.{p}"] = sd[h + f"attention.output.LayerNorm.{p}"]
            t[o + f"mlp.up.{p}"] = sd[h + f"intermediate.dense.{p}"]
            t[o + f"mlp.down.{p}"] = sd[h + f"output.dense.{p}"]
            t[o + f"mlp_norm.{p}"] = sd[h + f"output.LayerNorm.{p}"]
    _load(ours, t)
    ids = _ids()
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=1e-4)


def test_llama_parity():
    cfg = model_preset("llama-tiny", vocab_size=V)
    hf_cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                                      num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                                      num_key_value_heads=cfg.kv_heads, rms_norm_eps=cfg.norm_eps,
                                      max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=False,
                                      attention_bias=False, mlp_bias=False)
    assert cfg.kv_heads < cfg.n_heads  # grouped-query attention is exercised
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    ours = build_model(cfg).eval()
    sd = hf.state_dict()
    t = {"embed.weight": sd["model.embed_tokens.weight"], "head.proj.weight": sd["lm_head.weight"],
         "decoder.final_norm.weight": sd["model.norm.weight"]}
    for i in range(cfg.n_layers):
        h, o = f"model.layers.{i}.", f"decoder.layers.{i}."
        t[o + "attn.qkv.weight"] = torch.cat([sd[h + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        t[o + "attn.o.weight"] = sd[h + "self_attn.o_proj.weight"]
        t[o + "attn_norm.weight"] = sd[h + "input_layernorm.weight"]
        t[o + "mlp_norm.weight"] = sd[h + "post_attention_layernorm.weight"]
        t[o + "mlp.up.weight"] = torch.cat([sd[h + "mlp.gate_proj.weight"], sd[h + "mlp.up_proj.weight"]])
        t[o + "mlp.down.weight"] = sd[h + "mlp.down_proj.weight"]
    _load(ours, t)
    ids = _ids(T=20)
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours(ids).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_t5_parity():
    cfg = model_preset("t5-tiny", vocab_size=V)
    hf_cfg = transformers.T5Config(vocab_size=V, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff,
                                   num_layers=cfg.n_layers, num_decoder_layers=cfg.decoder_layers,
                                   num_heads=cfg.n_heads, relative_attention_num_buckets=cfg.rel_buckets,
                                   relative_attention_max_distance=cfg.rel_max_distance, dropout_rate=0.0,
                                   layer_norm_epsilon=cfg.norm_eps, feed_forward_proj="gated-gelu",
                                   tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0)
    assert not getattr(hf_cfg, "scale_decoder_outputs", False)  # T5 v1.1: untied, no d**-0.5 on the output
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    ours = build_model(cfg).eval()
    sd = hf.state_dict()
    rel = "relative_attention_bias.weight"
    t = {"embed.weight": sd["shared.weight"], "head.proj.weight": sd["lm_head.weight"],
         "encoder.final_norm.weight": sd["encoder.final_layer_norm.weight"],
         "decoder.final_norm.weight": sd["decoder.final_layer_norm.weight"],
         # T5 keeps the bias in the first layer's self-attention and reuses it in every layer
         "encoder.rel_bias.emb.weight": sd[f"encoder.block.0.layer.0.SelfAttention.{rel}"],
         "decoder.rel_bias.emb.weight": sd[f"decoder.block.0.layer.0.SelfAttention.{rel}"]}
    for side in ("encoder", "decoder"):
        for i in range(2):
            h, o = f"{side}.block.{i}.layer.", f"{side}.layers.{i}."
            ff = 2 if side == "decoder" else 1
            t[o + "attn.qkv.weight"] = torch.cat([sd[h + f"0.SelfAttention.{n}.weight"] for n in "qkv"])
            t[o + "attn.o.weight"] = sd[h + "0.SelfAttention.o.weight"]
            t[o + "attn_norm.weight"] = sd[h + "0.layer_norm.weight"]
            if side == "decoder":
                t[o + "cross_attn.q.weight"] = sd[h + "1.EncDecAttention.q.weight"]
                kv = [sd[h + f"1.EncDecAttention.{n}.weight"] for n in "kv"]
                t[o + "cross_attn.kv.weight"] = torch.cat(kv)
                t[o + "cross_attn.o.weight"] = sd[h + "1.EncDecAttention.o.weight"]
                t[o + "cross_norm.weight"] = sd[h + "1.layer_norm.weight"]
            t[o + "mlp.up.weight"] = torch.cat([sd[h + f"{ff}.DenseReluDense.wi_0.weight"],
                                                sd[h + f"{ff}.DenseReluDense.wi_1.weight"]])
            t[o + "mlp.down.weight"] = sd[h + f"{ff}.DenseReluDense.wo.weight"]
            t[o + "mlp_norm.weight"] = sd[h + f"{ff}.layer_norm.weight"]
    _load(ours, t)
    src, tgt = _ids(T=14, seed=1), _ids(T=9, seed=2)
    mask = torch.ones_like(src)
    mask[1, 11:] = 0  # the encoder's padding is respected by encoder self-attention and cross-attention
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt)
        got = ours(src, attention_mask=mask, decoder_input_ids=tgt)
    torch.testing.assert_close(got.encoder_hidden_states[mask.bool()],
                               ref.encoder_last_hidden_state[mask.bool()], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.logits, ref.logits, atol=1e-4, rtol=1e-4)
