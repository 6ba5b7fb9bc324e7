"""RoBERTa: the base model and ``RobertaForMaskedLM``.

BERT's body (see ``bert.py``) with fairseq's positions: they count only non-padding tokens and start at row
``pad_token_id + 1`` of the position table (lmlab's ``pos_pad_id`` and ``pos_offset``). Token types are all 0.
The masked-LM head is ``lm_head`` (dense, GELU, LayerNorm, decoder with a bias).
"""

from __future__ import annotations

import torch
from tokenizers import processors

from lmlab.config import ModelConfig
from lmlab.errors import InteropError
from lmlab.interop.bert import body, body_config, body_export
from lmlab.interop.core import (
    ANY,
    Export,
    Family,
    HFConfig,
    WeightMap,
    copy,
    head_is_tied,
    linear,
    model_config,
    norm,
    refuse,
    requires,
)


def _to_config(hf: HFConfig, tensors: dict[str, torch.Tensor]) -> ModelConfig:
    pad = hf.int("pad_token_id", 1)
    mlm = any(n.startswith("lm_head.") for n in tensors)
    values = body_config(hf)
    if mlm and values["activation"] != "gelu":
        raise InteropError(f"{hf.path}: hidden_act = {hf.get('hidden_act')!r}, but RoBERTa's LM head always uses "
                           "GELU and lmlab's head uses the model's activation; only 'gelu' is supported")
    tied = head_is_tied(hf, tensors, "lm_head.decoder.weight", "roberta.embeddings.word_embeddings.weight", True)
    return model_config(hf, **values, max_seq_len=hf.int("max_position_embeddings", 514) - pad - 1,
                        pos_offset=pad + 1, pos_pad_id=pad, lm_head=mlm, mlm_transform=mlm,
                        tie_embeddings=tied or not mlm, pooler="roberta.pooler.dense.weight" in tensors)


def _from_config(cfg: ModelConfig) -> Export:
    if cfg.pos_pad_id < 0 or cfg.pos_offset != cfg.pos_pad_id + 1:
        raise refuse(ROBERTA, "pos_offset", cfg.pos_offset, "RoBERTa's positions count non-padding tokens "
                     "(model.pos_pad_id >= 0) and start at model.pos_offset = pos_pad_id + 1")
    fields = dict(body_export(cfg, ROBERTA), max_position_embeddings=cfg.max_seq_len + cfg.pos_offset,
                  pad_token_id=cfg.pos_pad_id)
    if cfg.num_labels:
        raise refuse(ROBERTA, "num_labels", cfg.num_labels, "RobertaForSequenceClassification's head differs "
                     "from BERT's pooler + classifier, which is what lmlab has")
    if cfg.lm_head:
        if not cfg.mlm_transform:
            raise refuse(ROBERTA, "mlm_transform", False, "RobertaForMaskedLM's head has the dense + norm transform")
        if cfg.activation != "gelu":
            raise refuse(ROBERTA, "activation", cfg.activation, "RoBERTa's LM head always uses GELU ('gelu')")
        return Export("RobertaForMaskedLM", fields)
    return Export("RobertaModel", fields, prefixed=False)


def _weights(cfg: ModelConfig) -> WeightMap:
    rules = body(cfg, "roberta.")
    aliases = {}
    if cfg.lm_head:
        rules += [
            *linear("head.transform.0", "lm_head.dense", True),
            *norm("head.transform.2", "lm_head.layer_norm", True),
        ]
        if not cfg.tie_embeddings:  # as BERT: the untied decoder's own bias is the one read
            rules += linear("head.proj", "lm_head.decoder", True)
            return WeightMap(rules, {"lm_head.bias": "lm_head.decoder.bias"}, export_copies=("lm_head.bias",),
                             unread=("lm_head.bias",))
        rules.append(copy("head.proj.bias", "lm_head.bias"))
        aliases["lm_head.decoder.bias"] = "lm_head.bias"
        aliases["lm_head.decoder.weight"] = "roberta.embeddings.word_embeddings.weight"
    return WeightMap(rules, aliases)


def template(tokenizer) -> None:
    """``<s> A </s>`` and ``<s> A </s></s> B </s>``, as RoBERTa's (and BART's) tokenizers add."""
    bos, eos = tokenizer.roles.get("cls") or tokenizer.roles.get("bos"), tokenizer.roles.get("eos")
    if bos is None or eos is None:
        return
    tokenizer.tok.post_processor = processors.RobertaProcessing(
        (eos, tokenizer.token_to_id(eos)), (bos, tokenizer.token_to_id(bos)), trim_offsets=True,
        add_prefix_space=False)


ROBERTA = Family(
    name="RoBERTa", model_type="roberta",
    requires=requires(arch="encoder", norm="layernorm", prenorm=False, position="learned", bias=True,
                      embed_norm=True, type_vocab_size=ANY, mlm_transform=ANY, lm_head=ANY, pooler=ANY,
                      pos_offset=ANY, pos_pad_id=ANY),
    to_config=_to_config, from_config=_from_config, weights=_weights, prefix="roberta.",
    ignore=(r"embeddings\.position_ids$", r"embeddings\.token_type_ids$"), template=template,
)
