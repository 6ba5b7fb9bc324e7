"""T5: ``T5ForConditionalGeneration``, v1.0 and v1.1.

Pre-norm RMSNorm encoder-decoder without biases, a relative position bias per stack (kept in the first layer's
self-attention, reused by every layer), no 1/sqrt(d) attention scaling. v1.0: ReLU MLP (``wi``), head tied to
the embedding with the decoder output rescaled by ``d_model**-0.5`` (lmlab's ``head_rescale``). v1.1: gated
GELU (``wi_0`` gate, ``wi_1`` up), untied head ``lm_head.weight``, no rescale.

transformers 5 always ties T5's head unless the checkpoint holds a different ``lm_head.weight``, and reads the
rescale from ``scale_decoder_outputs`` (older configs: ``tie_word_embeddings``); so does this module.
"""

from __future__ import annotations

import torch

from lmlab.config import ModelConfig
from lmlab.errors import InteropError
from lmlab.interop.core import (
    ANY,
    Export,
    Family,
    HFConfig,
    Rule,
    WeightMap,
    cat,
    common_checks,
    copy,
    fused,
    hf_activation,
    model_config,
    norm,
    requires,
)

# feed_forward_proj -> lmlab activation; "gated-gelu" is the tanh GELU in transformers (gelu_new)
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gated-gelu": "geglu",
               "gated-gelu_new": "geglu", "gated-silu": "swiglu"}
TO_HF_ACTIVATION = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "geglu": "gated-gelu",
                    "swiglu": "gated-silu"}


def _to_config(hf: HFConfig, tensors: dict[str, torch.Tensor]) -> ModelConfig:
    hf.expect("is_decoder", (False,), False)
    d, heads, d_kv = hf.int("d_model"), hf.int("num_heads"), hf.int("d_kv")
    layers = hf.int("num_layers")
    head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
    tied = head is None or shared is None or (head.shape == shared.shape and torch.equal(head, shared))
    rescale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    if not isinstance(rescale, bool):
        raise InteropError(f"{hf.path}: scale_decoder_outputs must be true or false, got {rescale!r}")
    return model_config(
        hf, arch="encoder-decoder", vocab_size=hf.int("vocab_size"), d_model=d, n_layers=layers,
        n_decoder_layers=hf.int("num_decoder_layers", layers), n_heads=heads,
        d_head=0 if d_kv * heads == d else d_kv, d_ff=hf.int("d_ff"), max_seq_len=hf.int("n_positions", 512),
        norm="rmsnorm", norm_eps=hf.float("layer_norm_epsilon", 1e-6), prenorm=True, position="relative",
        rel_buckets=hf.int("relative_attention_num_buckets", 32),
        rel_max_distance=hf.int("relative_attention_max_distance", 128),
        activation=hf.pick("feed_forward_proj", ACTIVATIONS, "relu"), bias=False, tie_embeddings=tied,
        head_rescale=rescale, dropout=hf.float("dropout_rate", 0.1))


def _from_config(cfg: ModelConfig) -> Export:
    common_checks(cfg, T5, head_dim=True)
    return Export("T5ForConditionalGeneration", dict(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff, num_layers=cfg.n_layers,
        num_decoder_layers=cfg.decoder_layers, num_heads=cfg.n_heads, relative_attention_num_buckets=cfg.rel_buckets,
        relative_attention_max_distance=cfg.rel_max_distance, layer_norm_epsilon=cfg.norm_eps,
        feed_forward_proj=hf_activation(cfg, T5, TO_HF_ACTIVATION), dropout_rate=cfg.dropout,
        n_positions=cfg.max_seq_len,
        is_encoder_decoder=True, scale_decoder_outputs=cfg.head_rescale,
        # transformers 4 reads the rescale from this flag (and then ties); 5 reads scale_decoder_outputs and
        # ties unless lm_head.weight differs. A tied head without rescale is written as an equal lm_head.weight.
        tie_word_embeddings=cfg.head_rescale))


def _stack(cfg: ModelConfig, side: str) -> list[Rule]:
    n = cfg.n_heads * cfg.head_dim
    gated = cfg.activation in ("geglu", "swiglu")
    rules = [copy(f"{side}.rel_bias.emb.weight", f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias"
                                                 ".weight"),
             *norm(f"{side}.final_norm", f"{side}.final_layer_norm", False)]
    for i in range(cfg.n_layers if side == "encoder" else cfg.decoder_layers):
        o, h = f"{side}.layers.{i}.", f"{side}.block.{i}.layer."
        ff = f"{h}2" if side == "decoder" else f"{h}1"
        rules += [
            *fused(o + "attn.qkv", [f"{h}0.SelfAttention.{x}" for x in "qkv"], (n, n, n), False),
            copy(o + "attn.o.weight", f"{h}0.SelfAttention.o.weight"),
            *norm(o + "attn_norm", f"{h}0.layer_norm", False),
        ]
        if side == "decoder":
            rules += [
                copy(o + "cross_attn.q.weight", f"{h}1.EncDecAttention.q.weight"),
                cat(o + "cross_attn.kv.weight", [f"{h}1.EncDecAttention.{x}.weight" for x in "kv"], (n, n)),
                copy(o + "cross_attn.o.weight", f"{h}1.EncDecAttention.o.weight"),
                *norm(o + "cross_norm", f"{h}1.layer_norm", False),
            ]
        if gated:  # wi_0 is the gate, wi_1 the linear part: lmlab's [gate; up]
            rules.append(cat(o + "mlp.up.weight", [f"{ff}.DenseReluDense.wi_0.weight",
                                                   f"{ff}.DenseReluDense.wi_1.weight"], (cfg.d_ff, cfg.d_ff)))
        else:
            rules.append(copy(o + "mlp.up.weight", f"{ff}.DenseReluDense.wi.weight"))
        rules += [copy(o + "mlp.down.weight", f"{ff}.DenseReluDense.wo.weight"),
                  *norm(o + "mlp_norm", f"{ff}.layer_norm", False)]
    return rules


def _weights(cfg: ModelConfig) -> WeightMap:
    rules = [copy("embed.weight", "shared.weight"), *_stack(cfg, "encoder"), *_stack(cfg, "decoder")]
    aliases = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}
    if not cfg.tie_embeddings:
        return WeightMap(rules + [copy("head.proj.weight", "lm_head.weight")], aliases)
    aliases["lm_head.weight"] = "shared.weight"
    return WeightMap(rules, aliases, export_copies=() if cfg.head_rescale else ("lm_head.weight",))


T5 = Family(
    name="T5", model_type="t5",
    requires=requires(arch="encoder-decoder", norm="rmsnorm", prenorm=True, position="relative", bias=False,
                      head_rescale=ANY),
    to_config=_to_config, from_config=_from_config, weights=_weights,
)
