"""GPT-2: ``GPT2LMHeadModel`` and ``GPT2ForSequenceClassification``.

Pre-norm decoder, learned positions, biases everywhere. Its ``Conv1D`` layers store weights as (in, out), so
every projection is transposed; ``c_attn`` is already a fused q, k, v. The head is the token embedding unless
the config unties it (then ``lm_head.weight``). A checkpoint with ``score.weight`` is a sequence classifier (no
token head): ``score`` is lmlab's bias-free ``classifier`` on the last real token.
"""

from __future__ import annotations

import torch

from lmlab.config import ModelConfig
from lmlab.interop.core import (
    ACTIVATIONS,
    ANY,
    Export,
    Family,
    HFConfig,
    WeightMap,
    common_checks,
    copy,
    head_is_tied,
    hf_activation,
    model_config,
    norm,
    refuse,
    requires,
    transposed,
)


def _to_config(hf: HFConfig, tensors: dict[str, torch.Tensor]) -> ModelConfig:
    hf.expect("scale_attn_weights", (True,), True)
    hf.expect("scale_attn_by_inverse_layer_idx", (False,), False)
    hf.expect("add_cross_attention", (False,), False)
    d = hf.int("n_embd")
    classifier = "score.weight" in tensors  # GPT2ForSequenceClassification
    num_labels = (len(hf.get("id2label", {})) or hf.int("num_labels", 2)) if classifier else 0
    return model_config(
        hf, arch="decoder", vocab_size=hf.int("vocab_size"), d_model=d, n_layers=hf.int("n_layer"),
        n_heads=hf.int("n_head"), d_ff=hf.int("n_inner", 4 * d), max_seq_len=hf.int("n_positions", 1024),
        norm="layernorm", norm_eps=hf.float("layer_norm_epsilon", 1e-5), prenorm=True, position="learned",
        activation=hf.pick("activation_function", ACTIVATIONS, "gelu_new"), bias=True,
        tie_embeddings=head_is_tied(hf, tensors, "lm_head.weight", "transformer.wte.weight", True),
        lm_head=not classifier, num_labels=num_labels,
        dropout=hf.float("resid_pdrop", 0.1), init_std=hf.float("initializer_range", 0.02))


def _from_config(cfg: ModelConfig) -> Export:
    common_checks(cfg, GPT2)
    fields = dict(
        vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff,
        n_positions=cfg.max_seq_len, activation_function=hf_activation(cfg, GPT2),
        layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings, scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False, add_cross_attention=False)
    if cfg.num_labels:
        if cfg.lm_head:
            raise refuse(GPT2, "num_labels", cfg.num_labels, "no GPT-2 class has a token head and a classifier; "
                         "set model.lm_head = false for GPT2ForSequenceClassification")
        labels = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        return Export("GPT2ForSequenceClassification",
                      dict(fields, id2label=labels, label2id={v: int(k) for k, v in labels.items()}))
    if not cfg.lm_head:
        raise refuse(GPT2, "lm_head", False, "lmlab exports GPT2LMHeadModel (with its head) or, with "
                     "model.num_labels, GPT2ForSequenceClassification")
    return Export("GPT2LMHeadModel", fields)


def _weights(cfg: ModelConfig) -> WeightMap:
    p = "transformer."
    rules = [
        copy("embed.weight", f"{p}wte.weight"),
        copy("decoder.pos_emb.weight", f"{p}wpe.weight"),
        *norm("decoder.final_norm", f"{p}ln_f", True),
    ]
    for i in range(cfg.n_layers):
        o, h = f"decoder.layers.{i}.", f"{p}h.{i}."
        rules += [
            *norm(o + "attn_norm", h + "ln_1", True),
            *norm(o + "mlp_norm", h + "ln_2", True),
        ]
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.o", "attn.c_proj"), ("mlp.up", "mlp.c_fc"),
                             ("mlp.down", "mlp.c_proj")):
            rules += [transposed(f"{o}{ours}.weight", f"{h}{theirs}.weight"),
                      copy(f"{o}{ours}.bias", f"{h}{theirs}.bias")]
    if cfg.num_labels:
        return WeightMap(rules + [copy("classifier.weight", "score.weight")])
    if cfg.tie_embeddings:
        return WeightMap(rules, {"lm_head.weight": f"{p}wte.weight"})
    return WeightMap(rules + [copy("head.proj.weight", "lm_head.weight")])


GPT2 = Family(
    name="GPT-2", model_type="gpt2",
    requires=requires(arch="decoder", norm="layernorm", prenorm=True, position="learned", bias=True, lm_head=ANY,
                      num_labels=ANY),
    to_config=_to_config, from_config=_from_config, weights=_weights, prefix="transformer.",
    # the causal-mask buffers that old checkpoints carry
    ignore=(r"(^|\.)attn\.bias$", r"(^|\.)attn\.masked_bias$"),
)
