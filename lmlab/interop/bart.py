"""BART: ``BartForConditionalGeneration``.

Post-norm encoder-decoder with biases and GELU; learned positions whose table starts at row 2 (lmlab's
``pos_offset``), a LayerNorm on the embeddings of each stack (``layernorm_embedding``), token embeddings
optionally scaled by sqrt(d_model) (``scale_embedding``), a head tied to the embedding with a bias
(``final_logits_bias``, lmlab's ``head_bias``). Its LayerNorms use PyTorch's default eps, 1e-5.
"""

from __future__ import annotations

import torch

from lmlab.config import ModelConfig
from lmlab.errors import InteropError
from lmlab.interop.core import (
    ACTIVATIONS,
    ANY,
    Export,
    Family,
    HFConfig,
    Rule,
    WeightMap,
    common_checks,
    copy,
    fused,
    head_is_tied,
    hf_activation,
    linear,
    model_config,
    norm,
    refuse,
    requires,
    row,
)
from lmlab.interop.roberta import template

OFFSET = 2  # BartLearnedPositionalEmbedding's fixed offset
EPS = 1e-5  # nn.LayerNorm's default, which BART uses


def _same(hf: HFConfig, encoder_key: str, decoder_key: str) -> int:
    value = hf.int(encoder_key)
    if hf.int(decoder_key) != value:
        raise InteropError(f"{hf.path}: {encoder_key} = {value} but {decoder_key} = {hf.int(decoder_key)}; "
                           "lmlab's encoder and decoder share one width and head count")
    return value


def _to_config(hf: HFConfig, tensors: dict[str, torch.Tensor]) -> ModelConfig:
    hf.expect("normalize_before", (False,), False)  # mBART-style pre-norm
    hf.expect("add_final_layer_norm", (False,), False)
    hf.expect("normalize_embedding", (True,), True)
    return model_config(
        hf, arch="encoder-decoder", vocab_size=hf.int("vocab_size"), d_model=hf.int("d_model"),
        n_layers=hf.int("encoder_layers"), n_decoder_layers=hf.int("decoder_layers"),
        n_heads=_same(hf, "encoder_attention_heads", "decoder_attention_heads"),
        d_ff=_same(hf, "encoder_ffn_dim", "decoder_ffn_dim"), max_seq_len=hf.int("max_position_embeddings", 1024),
        norm="layernorm", norm_eps=EPS, prenorm=False, position="learned", pos_offset=OFFSET,
        activation=hf.pick("activation_function", ACTIVATIONS, "gelu"), bias=True, embed_norm=True,
        embed_scale=hf.bool("scale_embedding", False), head_bias="final_logits_bias" in tensors,
        tie_embeddings=head_is_tied(hf, tensors, "lm_head.weight", "model.shared.weight", True),
        dropout=hf.float("dropout", 0.1), init_std=hf.float("init_std", 0.02))


def _from_config(cfg: ModelConfig) -> Export:
    common_checks(cfg, BART)
    if cfg.norm_eps != EPS:
        raise refuse(BART, "norm_eps", cfg.norm_eps, f"BART's LayerNorms use eps {EPS}")
    return Export("BartForConditionalGeneration", dict(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, encoder_layers=cfg.n_layers,
        decoder_layers=cfg.decoder_layers, encoder_attention_heads=cfg.n_heads, decoder_attention_heads=cfg.n_heads,
        encoder_ffn_dim=cfg.d_ff, decoder_ffn_dim=cfg.d_ff, max_position_embeddings=cfg.max_seq_len,
        activation_function=hf_activation(cfg, BART), scale_embedding=cfg.embed_scale,
        tie_word_embeddings=cfg.tie_embeddings, dropout=cfg.dropout, attention_dropout=cfg.dropout,
        activation_dropout=0.0, init_std=cfg.init_std, is_encoder_decoder=True))


def _stack(cfg: ModelConfig, side: str) -> list[Rule]:
    d = cfg.d_model
    p = f"model.{side}."
    rules = [copy(f"{side}.pos_emb.weight", f"{p}embed_positions.weight"),
             *norm(f"{side}.embed_norm", f"{p}layernorm_embedding", True)]
    for i in range(cfg.n_layers if side == "encoder" else cfg.decoder_layers):
        o, h = f"{side}.layers.{i}.", f"{p}layers.{i}."
        rules += [
            *fused(o + "attn.qkv", [f"{h}self_attn.{x}_proj" for x in "qkv"], (d, d, d), True),
            *linear(o + "attn.o", h + "self_attn.out_proj", True),
            *norm(o + "attn_norm", h + "self_attn_layer_norm", True),
        ]
        if side == "decoder":
            rules += [
                *linear(o + "cross_attn.q", h + "encoder_attn.q_proj", True),
                *fused(o + "cross_attn.kv", [f"{h}encoder_attn.{x}_proj" for x in "kv"], (d, d), True),
                *linear(o + "cross_attn.o", h + "encoder_attn.out_proj", True),
                *norm(o + "cross_norm", h + "encoder_attn_layer_norm", True),
            ]
        rules += [
            *linear(o + "mlp.up", h + "fc1", True),
            *linear(o + "mlp.down", h + "fc2", True),
            *norm(o + "mlp_norm", h + "final_layer_norm", True),
        ]
    return rules


def _weights(cfg: ModelConfig) -> WeightMap:
    rules = [copy("embed.weight", "model.shared.weight"), *_stack(cfg, "encoder"), *_stack(cfg, "decoder")]
    if cfg.head_bias:
        rules.append(row("head.proj.bias", "final_logits_bias"))
    aliases = {f"model.{side}.embed_tokens.weight": "model.shared.weight" for side in ("encoder", "decoder")}
    if cfg.tie_embeddings:
        aliases["lm_head.weight"] = "model.shared.weight"
        return WeightMap(rules, aliases)
    # transformers 5 unties the stacks' embed_tokens from `shared` too when tie_word_embeddings is false
    rules.append(copy("head.proj.weight", "lm_head.weight"))
    return WeightMap(rules, aliases, export_copies=tuple(aliases))


BART = Family(
    name="BART", model_type="bart",
    requires=requires(arch="encoder-decoder", norm="layernorm", prenorm=False, position="learned", bias=True,
                      embed_norm=True, pos_offset=OFFSET, embed_scale=ANY, head_bias=ANY),
    to_config=_to_config, from_config=_from_config, weights=_weights, prefix="model.", template=template,
)
