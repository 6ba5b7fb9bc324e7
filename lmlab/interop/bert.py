"""BERT: ``BertModel``, ``BertForMaskedLM`` (transform head, decoder bias), ``BertForSequenceClassification``.

Post-norm encoder, learned positions, token types, a LayerNorm on the embeddings. Which head a checkpoint has
is read from its tensors: ``cls.predictions.*`` (masked LM), ``classifier.*`` (classification, on the
``pooler``), neither (the bare ``BertModel``: hidden states only).
"""

from __future__ import annotations

import torch
from tokenizers import processors

from lmlab.config import ModelConfig
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
)


def body(cfg: ModelConfig, p: str) -> list[Rule]:
    """Embeddings and layers of a BERT-style encoder under prefix ``p`` ("bert.", "roberta.")."""
    d = cfg.d_model
    rules = [
        copy("embed.weight", f"{p}embeddings.word_embeddings.weight"),
        copy("encoder.pos_emb.weight", f"{p}embeddings.position_embeddings.weight"),
        copy("encoder.type_emb.weight", f"{p}embeddings.token_type_embeddings.weight"),
        *norm("encoder.embed_norm", f"{p}embeddings.LayerNorm", True),
    ]
    for i in range(cfg.n_layers):
        o, h = f"encoder.layers.{i}.", f"{p}encoder.layer.{i}."
        rules += [
            *fused(o + "attn.qkv", [h + "attention.self.query", h + "attention.self.key",
                                    h + "attention.self.value"], (d, d, d), True),
            *linear(o + "attn.o", h + "attention.output.dense", True),
            *norm(o + "attn_norm", h + "attention.output.LayerNorm", True),
            *linear(o + "mlp.up", h + "intermediate.dense", True),
            *linear(o + "mlp.down", h + "output.dense", True),
            *norm(o + "mlp_norm", h + "output.LayerNorm", True),
        ]
    if cfg.pooler:
        rules += linear("pooler.0", f"{p}pooler.dense", True)
    return rules


def body_config(hf: HFConfig) -> dict:
    """The lmlab options of a BERT-style encoder body (BERT and RoBERTa share them)."""
    hf.expect("position_embedding_type", ("absolute",), "absolute")
    hf.expect("is_decoder", (False,), False)
    hf.expect("add_cross_attention", (False,), False)
    return dict(
        arch="encoder", vocab_size=hf.int("vocab_size"), d_model=hf.int("hidden_size"),
        n_layers=hf.int("num_hidden_layers"), n_heads=hf.int("num_attention_heads"),
        d_ff=hf.int("intermediate_size"), norm="layernorm", norm_eps=hf.float("layer_norm_eps", 1e-12),
        prenorm=False, position="learned", activation=hf.pick("hidden_act", ACTIVATIONS, "gelu"), bias=True,
        type_vocab_size=hf.int("type_vocab_size", 2), embed_norm=True,
        dropout=hf.float("hidden_dropout_prob", 0.1), init_std=hf.float("initializer_range", 0.02),
    )


def body_export(cfg: ModelConfig, family: Family) -> dict:
    common_checks(cfg, family)
    if cfg.type_vocab_size < 1:
        raise refuse(family, "type_vocab_size", 0, "it always has token-type embeddings; set it to 1 or 2")
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, intermediate_size=cfg.d_ff, hidden_act=hf_activation(cfg, family),
        type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.norm_eps, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, initializer_range=cfg.init_std,
        position_embedding_type="absolute", tie_word_embeddings=cfg.tie_embeddings, is_decoder=False,
    )


def _to_config(hf: HFConfig, tensors: dict[str, torch.Tensor]) -> ModelConfig:
    mlm = any(n.startswith("cls.predictions.") for n in tensors)
    classifier = "classifier.weight" in tensors
    num_labels = 0
    if classifier:
        num_labels = len(hf.get("id2label", {})) or hf.int("num_labels", 2)
    tied = head_is_tied(hf, tensors, "cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight",
                        True)
    return model_config(hf, **body_config(hf), max_seq_len=hf.int("max_position_embeddings", 512),
                        lm_head=mlm, mlm_transform=mlm, tie_embeddings=tied or not mlm,
                        pooler="bert.pooler.dense.weight" in tensors, num_labels=num_labels)


def _from_config(cfg: ModelConfig) -> Export:
    fields = dict(body_export(cfg, BERT), max_position_embeddings=cfg.max_seq_len)
    if cfg.lm_head:
        if not cfg.mlm_transform:
            raise refuse(BERT, "mlm_transform", False, "BertForMaskedLM's head has the dense + norm transform")
        if cfg.num_labels:
            raise refuse(BERT, "num_labels", cfg.num_labels, "no BERT class has a masked-LM head and a "
                         "classifier; set model.lm_head = false for BertForSequenceClassification")
        return Export("BertForMaskedLM", fields)
    if cfg.num_labels:
        if not cfg.pooler:
            raise refuse(BERT, "pooler", False, "BertForSequenceClassification classifies the pooled [CLS]")
        labels = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        return Export("BertForSequenceClassification",
                      dict(fields, id2label=labels, label2id={v: int(k) for k, v in labels.items()}))
    return Export("BertModel", fields, prefixed=False)  # without a pooler, transformers initialises its own


def _weights(cfg: ModelConfig) -> WeightMap:
    rules = body(cfg, "bert.")
    aliases = {}
    if cfg.lm_head:
        rules += [
            *linear("head.transform.0", "cls.predictions.transform.dense", True),
            *norm("head.transform.2", "cls.predictions.transform.LayerNorm", True),
        ]
        if not cfg.tie_embeddings:  # transformers 5 reads the decoder's own bias; 4 ties it to cls.predictions.bias
            rules += linear("head.proj", "cls.predictions.decoder", True)
            return WeightMap(rules, {"cls.predictions.bias": "cls.predictions.decoder.bias"},
                             export_copies=("cls.predictions.bias",), unread=("cls.predictions.bias",))
        rules.append(copy("head.proj.bias", "cls.predictions.bias"))
        aliases["cls.predictions.decoder.bias"] = "cls.predictions.bias"  # the same parameter in transformers
        aliases["cls.predictions.decoder.weight"] = "bert.embeddings.word_embeddings.weight"
    if cfg.num_labels:
        rules += linear("classifier", "classifier", True)
    return WeightMap(rules, aliases)


def template(tokenizer) -> None:
    """``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]`` (token types 0, then 1), as BERT's tokenizers add."""
    cls, sep = tokenizer.roles.get("cls"), tokenizer.roles.get("sep")
    if cls is None or sep is None:
        return
    tokenizer.tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])


BERT = Family(
    name="BERT", model_type="bert",
    requires=requires(arch="encoder", norm="layernorm", prenorm=False, position="learned", bias=True,
                      embed_norm=True, type_vocab_size=ANY, mlm_transform=ANY, lm_head=ANY, pooler=ANY,
                      num_labels=ANY),
    to_config=_to_config, from_config=_from_config, weights=_weights, prefix="bert.",
    ignore=(r"embeddings\.position_ids$", r"embeddings\.token_type_ids$"), template=template,
)
