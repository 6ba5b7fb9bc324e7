"""Turn a :class:`~lmlab.config.ModelConfig` into a :class:`~lmlab.model.transformer.Transformer`."""

from __future__ import annotations

import math

import torch
from torch import nn

from lmlab.config import ModelConfig
from lmlab.errors import ConfigError
from lmlab.model.attention import Attention
from lmlab.model.layers import GATED, MLP, Activation, Linear, make_norm
from lmlab.model.positions import RelativePositionBias, Rotary
from lmlab.model.transformer import Block, Head, Stack, Transformer


def _block(cfg: ModelConfig, cross: bool) -> Block:
    scale = 1.0 if cfg.position == "relative" else None  # T5 does not scale attention scores
    norm = lambda: make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
    attn = lambda is_cross: Attention(cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.head_dim, cfg.bias,
                                      cfg.dropout, scale, cross=is_cross)
    mlp = MLP(cfg.d_model, cfg.d_ff, cfg.activation, cfg.bias)
    return Block(attn(False), mlp, norm(), norm(), cfg.prenorm, cfg.dropout,
                 cross_attn=attn(True) if cross else None, cross_norm=norm() if cross else None)


def _stack(cfg: ModelConfig, n_layers: int, causal: bool, cross: bool, token_types: bool) -> Stack:
    norm = lambda: make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
    types = token_types and cfg.type_vocab_size > 0
    return Stack(
        [_block(cfg, cross) for _ in range(n_layers)],
        causal=causal,
        pos_emb=nn.Embedding(cfg.max_seq_len + cfg.pos_offset, cfg.d_model) if cfg.position == "learned" else None,
        pos_offset=cfg.pos_offset,
        pos_pad_id=cfg.pos_pad_id if cfg.pos_pad_id >= 0 else None,
        type_emb=nn.Embedding(cfg.type_vocab_size, cfg.d_model) if types else None,
        embed_norm=norm() if cfg.embed_norm else None,
        rotary=Rotary(cfg.head_dim, cfg.rope_theta) if cfg.position == "rotary" else None,
        rel_bias=RelativePositionBias(cfg.n_heads, cfg.rel_buckets, cfg.rel_max_distance,
                                      bidirectional=not causal) if cfg.position == "relative" else None,
        final_norm=norm() if cfg.prenorm else None,
        dropout=cfg.dropout,
    )


def init_weights(model: Transformer, std: float) -> None:
    """normal(0, std) for linear and embedding weights, zeros for biases, ones for norms; residual output
    projections (``attn.o``, ``cross_attn.o``, ``mlp.down``) get ``std / sqrt(2 * n_layers)`` (GPT-2)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    for stack in (model.encoder, model.decoder):
        if stack is None:
            continue
        scaled = std / math.sqrt(2 * len(stack.layers))
        for block in stack.layers:
            for proj in (block.attn.o, block.mlp.down) + ((block.cross_attn.o,) if block.cross_attn else ()):
                nn.init.normal_(proj.weight, 0.0, scaled)


def build_model(cfg: ModelConfig) -> Transformer:
    """Build and initialise the model ``cfg`` describes; ``model.config`` is ``cfg``.

    Raises:
        ConfigError: ``cfg.vocab_size`` is 0.
    """
    if cfg.vocab_size <= 0:
        raise ConfigError("model.vocab_size is 0: set model.vocab_size, or take it from the tokenizer "
                          "(dataclasses.replace(cfg, vocab_size=tokenizer.vocab_size)) before building")
    encoder = decoder = None
    if cfg.arch in ("encoder", "encoder-decoder"):
        encoder = _stack(cfg, cfg.n_layers, causal=False, cross=False, token_types=True)
    if cfg.arch == "decoder":
        decoder = _stack(cfg, cfg.n_layers, causal=True, cross=False, token_types=True)
    if cfg.arch == "encoder-decoder":
        decoder = _stack(cfg, cfg.decoder_layers, causal=True, cross=True, token_types=False)
    head = None
    if cfg.lm_head:
        transform = None
        if cfg.mlm_transform:  # BERT: dense, activation (the gate's function for gated ones), norm
            act = {"swiglu": "gelu", "geglu": "gelu_tanh"}.get(cfg.activation, cfg.activation)
            assert act not in GATED
            transform = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias), Activation(act),
                                      make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias))
        head_bias = (cfg.mlm_transform and cfg.bias) or cfg.head_bias
        head = Head(Linear(cfg.d_model, cfg.vocab_size, bias=head_bias), transform,
                    scale=cfg.d_model ** -0.5 if cfg.head_rescale else 1.0)
    pooler = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.Tanh()) if cfg.pooler else None
    # BERT's classifier has a bias; Hugging Face decoders' ``score`` has none
    classifier = nn.Linear(cfg.d_model, cfg.num_labels, bias=cfg.arch == "encoder") if cfg.num_labels > 0 else None
    model = Transformer(nn.Embedding(cfg.vocab_size, cfg.d_model), head, encoder, decoder, cfg.tie_embeddings,
                        embed_scale=cfg.d_model ** 0.5 if cfg.embed_scale else 1.0, pooler=pooler,
                        classifier=classifier)
    init_weights(model, cfg.init_std)
    model.config = cfg
    return model


def build_empty(cfg: ModelConfig, dtype: torch.dtype, device: str = "cpu") -> Transformer:
    """The model of ``cfg`` with its weights allocated in ``dtype`` and not initialised, for a checkpoint's to be
    read into (built on the meta device, then allocated; tied weights tied again): a model loaded to run in
    bfloat16 never holds a float32 copy, nor spends the time of a random initialisation. With ``device="meta"``
    nothing is allocated: the checkpoint's tensors are then assigned to it (``load_weights(assign=True)``)."""
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to(dtype)
    if device == "meta":
        return model
    ties = tied_names(model)
    model = model.to_empty(device=device)  # which makes new parameters: tied ones are tied again
    tie_again(model, ties)
    return model


def tied_names(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, first name)`` of each parameter that is another name's too (a head tied to the embedding)."""
    first: dict[int, str] = {}
    pairs = [(name, first.setdefault(id(p), name)) for name, p in model.named_parameters(remove_duplicate=False)]
    return [(name, source) for name, source in pairs if name != source]


def tie_again(model: nn.Module, ties: list[tuple[str, str]]) -> None:
    """Make each parameter of ``ties`` (:func:`tied_names`) the one its first name holds again."""
    for name, source in ties:
        module, _, attr = name.rpartition(".")
        setattr(model.get_submodule(module), attr, model.get_parameter(source))


def assign_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Make ``tensors`` (by state-dict name) the parameters and buffers of ``model``, tied parameters tied again,
    and allocate what is left on the meta device (buffers made at construction, which recompute themselves)."""
    ties = tied_names(model)
    for name, t in tensors.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(t, requires_grad=False)
        else:
            module._buffers[attr] = t
    tie_again(model, ties)
    for module in model.modules():
        own = [t for t in [*module._parameters.values(), *module._buffers.values()] if t is not None]
        if any(t.is_meta for t in own):
            # only modules whose every tensor is left (to_empty would also blank the tensors just given)
            assert all(t.is_meta for t in own), f"{type(module).__name__} was given some of its tensors only"
            module.to_empty(device="cpu", recurse=False)
