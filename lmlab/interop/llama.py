"""Llama: ``LlamaForCausalLM``.

Pre-norm RMSNorm decoder, rotary positions (rotate-half convention, plain RoPE without scaling), grouped-query
attention, SwiGLU MLP, optional biases, tied or untied head. q, k, v fuse into ``attn.qkv`` and gate, up into
``mlp.up`` (lmlab's gated MLP takes ``[gate; up]``).
"""

from __future__ import annotations

import torch

from lmlab.config import ModelConfig
from lmlab.errors import InteropError
from lmlab.interop.core import (
    Export,
    Family,
    HFConfig,
    WeightMap,
    common_checks,
    copy,
    fused,
    head_is_tied,
    linear,
    model_config,
    norm,
    requires,
)


def _rope_theta(hf: HFConfig) -> float:
    """``rope_parameters`` (transformers 5) or the older ``rope_theta`` / ``rope_scaling`` fields."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise InteropError(f"{hf.path}: rope_type = {kind!r} (scaled rotary positions) has no lmlab equivalent; "
                           "only plain RoPE ('default') is supported")
    return float(rope.get("rope_theta", hf.float("rope_theta", 10000.0)))


def _to_config(hf: HFConfig, tensors: dict[str, torch.Tensor]) -> ModelConfig:
    hf.expect("hidden_act", ("silu",), "silu")
    bias = hf.bool("attention_bias", False)
    if hf.bool("mlp_bias", False) != bias:
        raise InteropError(f"{hf.path}: attention_bias = {bias} but mlp_bias = {not bias}; lmlab has one "
                           "model.bias for both")
    d, heads = hf.int("hidden_size"), hf.int("num_attention_heads")
    head_dim = hf.int("head_dim", d // heads)
    return model_config(
        hf, arch="decoder", vocab_size=hf.int("vocab_size"), d_model=d, n_layers=hf.int("num_hidden_layers"),
        n_heads=heads, n_kv_heads=hf.int("num_key_value_heads", heads),
        d_head=0 if head_dim * heads == d else head_dim, d_ff=hf.int("intermediate_size"),
        max_seq_len=hf.int("max_position_embeddings", 2048), norm="rmsnorm", norm_eps=hf.float("rms_norm_eps", 1e-6),
        prenorm=True, position="rotary", rope_theta=_rope_theta(hf), activation="swiglu", bias=bias,
        tie_embeddings=head_is_tied(hf, tensors, "lm_head.weight", "model.embed_tokens.weight", False),
        dropout=hf.float("attention_dropout", 0.0), init_std=hf.float("initializer_range", 0.02))


def _from_config(cfg: ModelConfig) -> Export:
    common_checks(cfg, LLAMA, gqa=True, head_dim=True)
    return Export("LlamaForCausalLM", dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
        intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, hidden_act="silu",
        rope_theta=cfg.rope_theta,  # where transformers 4 reads it
        attention_bias=cfg.bias, mlp_bias=cfg.bias, tie_word_embeddings=cfg.tie_embeddings,
        attention_dropout=cfg.dropout, initializer_range=cfg.init_std))


def _weights(cfg: ModelConfig) -> WeightMap:
    q, kv, b = cfg.n_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.bias
    rules = [
        copy("embed.weight", "model.embed_tokens.weight"),
        *norm("decoder.final_norm", "model.norm", False),
    ]
    for i in range(cfg.n_layers):
        o, h = f"decoder.layers.{i}.", f"model.layers.{i}."
        rules += [
            *norm(o + "attn_norm", h + "input_layernorm", False),
            *fused(o + "attn.qkv", [h + "self_attn.q_proj", h + "self_attn.k_proj", h + "self_attn.v_proj"],
                   (q, kv, kv), b),
            *linear(o + "attn.o", h + "self_attn.o_proj", b),
            *norm(o + "mlp_norm", h + "post_attention_layernorm", False),
            *fused(o + "mlp.up", [h + "mlp.gate_proj", h + "mlp.up_proj"], (cfg.d_ff, cfg.d_ff), b),
            *linear(o + "mlp.down", h + "mlp.down_proj", b),
        ]
    if cfg.tie_embeddings:
        return WeightMap(rules, {"lm_head.weight": "model.embed_tokens.weight"})
    return WeightMap(rules + [copy("head.proj.weight", "lm_head.weight")])


LLAMA = Family(
    name="Llama", model_type="llama",
    requires=requires(arch="decoder", norm="rmsnorm", prenorm=True, position="rotary", activation="swiglu"),
    to_config=_to_config, from_config=_from_config, weights=_weights, prefix="model.",
    ignore=(r"rotary_emb\.inv_freq$",),  # recomputed from rope_theta
)
