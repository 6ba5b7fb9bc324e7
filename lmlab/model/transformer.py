"""The Transformer: one block, stacked into an encoder, a decoder or an encoder-decoder.

Layout (parameter names a weight map can rely on)::

    embed                      token embedding (V, D), shared by encoder and decoder
    encoder / decoder          Stack: pos_emb, type_emb, embed_norm, rel_bias | rotary, layers[i], final_norm
      layers[i]                Block: attn_norm, attn (qkv, o), [cross_norm, cross_attn (q, kv, o)], mlp_norm,
                               mlp (up, down)
    head                       [transform (dense, act, norm)], proj (V, D) (tied to embed when asked) [+ bias];
                               None for a model without a token head (``lm_head = false``)
    pooler, classifier         optional sequence classifier: encoders: [dense + tanh] on the first token, then
                               (num_labels, D) + bias (BERT); decoders: (num_labels, D), no bias, on the last
                               real token (Hugging Face's ``score`` of GPT-2 / Llama classifiers)

Pre-norm blocks compute ``x + f(norm(x))``; post-norm blocks ``norm(x + f(x))`` (BERT, BART).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from lmlab.model.attention import Attention, build_mask
from lmlab.model.cache import KVCache
from lmlab.model.layers import MLP, inference_layout, return_freed_memory
from lmlab.model.positions import RelativePositionBias, Rotary, positions_from_segments, positions_from_tokens
from lmlab.model.quant import QUANTIZE, quantize_int8


def linear_macs(module: nn.Module) -> int:
    """Multiply-adds per row through every ``nn.Linear`` in ``module``: ``sum(in * out)``."""
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass
class ModelOutput:
    """What ``model(...)`` returns, named as in ``transformers``: ``out.logits``, ``out.last_hidden_state``, and
    ``out[0]`` (the first field that is not None: the logits, or the last hidden state of a model without a token
    head, as ``transformers``' LM and base models answer it)."""

    logits: Tensor | None  # (B, T, V); decoder side for encoder-decoders; None for a model without a token head
    last_hidden_state: Tensor  # (B, T, D) final hidden states (after the final norm); the decoder's for enc-dec
    hidden_states: tuple[Tensor, ...] | None = None  # output_hidden_states: the embeddings, then each block's
    # output, the last one after the final norm (so hidden_states[-1] is last_hidden_state); n_layers + 1 of them
    encoder_last_hidden_state: Tensor | None = None  # (B, S, D) encoder-decoders only
    encoder_hidden_states: tuple[Tensor, ...] | None = None  # output_hidden_states on an encoder-decoder

    def to_tuple(self) -> tuple[Tensor, ...]:
        return tuple(v for v in (self.logits, self.last_hidden_state, self.hidden_states,
                                 self.encoder_last_hidden_state, self.encoder_hidden_states) if v is not None)

    def __getitem__(self, key: int | slice | str):
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


class Block(nn.Module):
    """Self-attention, optional cross-attention, MLP; each a residual branch with its norm."""

    def __init__(self, attn: Attention, mlp: MLP, attn_norm: nn.Module, mlp_norm: nn.Module, prenorm: bool,
                 dropout: float = 0.0, cross_attn: Attention | None = None,
                 cross_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.attn_norm, self.attn = attn_norm, attn
        self.cross_norm, self.cross_attn = cross_norm, cross_attn
        self.mlp_norm, self.mlp = mlp_norm, mlp
        self.drop = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.Module, f) -> Tensor:
        drop = self.drop if self.training and self.drop.p > 0 else _identity  # (a module call less per branch)
        if self.prenorm:
            return x + drop(f(norm(x)))
        return norm(x + drop(f(x)))

    def forward(self, x: Tensor, *, mask: Tensor | None, is_causal: bool, rope: tuple[Tensor, Tensor] | None,
                context: Tensor | None, context_mask: Tensor | None, cache: KVCache | None,
                layer: int) -> Tensor:
        attn = lambda h: self.attn(h, mask=mask, is_causal=is_causal, rope=rope, cache=cache, layer=layer)
        x = self._residual(x, self.attn_norm, attn)
        if self.cross_attn is not None:
            cross = lambda h: self.cross_attn(h, mask=context_mask, context=context, cache=cache, layer=layer)
            x = self._residual(x, self.cross_norm, cross)
        return self._residual(x, self.mlp_norm, self.mlp)


class Stack(nn.Module):
    """Embedding additions, a list of blocks and the final norm: an encoder or a decoder.

    It takes token embeddings and adds what positions need: learned position embeddings (``pos_emb``, position
    ``p`` at row ``p + pos_offset``),
    token types (``type_emb``), a norm (``embed_norm``); rotary tables (``rotary``) or a relative position
    bias (``rel_bias``) go to the attention of every layer.
    """

    def __init__(self, layers: list[Block], *, causal: bool, pos_emb: nn.Embedding | None = None,
                 type_emb: nn.Embedding | None = None, embed_norm: nn.Module | None = None,
                 rotary: Rotary | None = None, rel_bias: RelativePositionBias | None = None,
                 final_norm: nn.Module | None = None, dropout: float = 0.0, pos_offset: int = 0,
                 pos_pad_id: int | None = None) -> None:
        super().__init__()
        self.causal = causal
        self.pos_emb, self.type_emb, self.embed_norm = pos_emb, type_emb, embed_norm
        # position p is row p + pos_offset of pos_emb; with pos_pad_id, positions count non-pad tokens only
        self.pos_offset, self.pos_pad_id = pos_offset, pos_pad_id
        self.rotary, self.rel_bias = rotary, rel_bias
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.checkpoint_blocks = False  # activation checkpointing per block (set by the trainer)

    def forward(self, x: Tensor, positions: Tensor, *, causal: bool, token_type_ids: Tensor | None = None,
                key_padding: Tensor | None = None, segment_ids: Tensor | None = None,
                context: Tensor | None = None, context_mask: Tensor | None = None,
                cache: KVCache | None = None, prefix_lengths: Tensor | None = None,
                collect: list[Tensor] | None = None) -> Tensor:
        """Run the stack on token embeddings ``x`` (B, T, D) at ``positions`` (B or 1, T).

        ``key_padding`` (B, Tk) covers every key, cached ones included; ``context_mask`` is the boolean
        cross-attention mask to ``context`` (B, S, D). ``collect`` gets the input of every block, then the output.
        """
        B, T, _ = x.shape
        offset = cache.length if cache is not None else 0
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions + self.pos_offset)
        if self.type_emb is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(positions)
            x = x + self.type_emb(types)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but the model has no token-type embeddings "
                             "(model.type_vocab_size is 0)")
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.drop(x)

        k_len = offset + T
        mask = build_mask(T, k_len, causal=causal, offset=offset, key_padding=key_padding,
                          q_segments=segment_ids, k_segments=segment_ids, prefix=prefix_lengths, device=x.device)
        is_causal = causal and mask is None and offset == 0
        rope = self.rotary(positions) if self.rotary is not None else None
        if self.rel_bias is not None:  # T5: additive float bias, no 1/sqrt(d) scaling (set on the attention)
            k_pos = positions if cache is None else torch.arange(k_len, device=x.device)[None]
            if causal and mask is None:
                mask = build_mask(T, k_len, causal=True, offset=offset, device=x.device)
            bias = self.rel_bias(positions, k_pos).to(x.dtype)  # (B or 1, nh, T, Tk)
            mask = bias if mask is None else bias.masked_fill(~mask, torch.finfo(x.dtype).min)
            is_causal = False

        recompute = self.checkpoint_blocks and self.training and torch.is_grad_enabled() and cache is None
        for i, block in enumerate(self.layers):
            if collect is not None:
                collect.append(x)
            kwargs = dict(mask=mask, is_causal=is_causal, rope=rope, context=context, context_mask=context_mask,
                          cache=cache, layer=i)
            if recompute:  # keep only each block's input; recompute its activations in the backward pass
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False, **kwargs)
            else:
                x = block(x, **kwargs)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if collect is not None:
            collect.append(x)
        return x


class Head(nn.Module):
    """Hidden states to logits: BERT's optional ``transform`` (dense, activation, norm), then ``proj``.

    ``scale`` multiplies the hidden states first (T5 v1.0 rescales by ``d_model**-0.5`` before its tied head).
    """

    def __init__(self, proj: nn.Linear, transform: nn.Module | None = None, scale: float = 1.0) -> None:
        super().__init__()
        self.transform, self.proj, self.scale = transform, proj, scale

    def forward(self, h: Tensor) -> Tensor:
        if self.scale != 1.0:
            h = h * self.scale
        if self.transform is not None:
            h = self.transform(h)
        return self.proj(h)


class Transformer(nn.Module):
    """An encoder, a decoder or an encoder-decoder language model that maps tokens to logits.

    It never computes a loss. Build it with :func:`lmlab.model.build_model`, which also sets
    :attr:`config`. ``embed`` is shared by both stacks; with ``tie_embeddings`` the head's projection
    is the same tensor. Token embeddings are multiplied by ``embed_scale`` (BART's ``scale_embedding``).
    ``head`` may be None (hidden states only); ``pooler`` and ``classifier`` make a sequence classifier::

        h = model.hidden(input_ids, attention_mask=mask)           # (B, T, D)
        logits = model.classify(h, attention_mask=mask)             # (B, num_labels)
        names = [model.id2label[i] for i in logits.argmax(-1)]      # when the model has label names

    :attr:`id2label` holds the label names (None when it has none); checkpoints save it in config.json as
    Hugging Face does (``id2label``, ``label2id``).
    """

    config = None  # the ModelConfig it was built from (set by the builder; used to save it)
    _id2label: list[str] | None = None

    def __init__(self, embed: nn.Embedding, head: Head | None, encoder: Stack | None = None,
                 decoder: Stack | None = None, tie_embeddings: bool = False, *, embed_scale: float = 1.0,
                 pooler: nn.Module | None = None, classifier: nn.Linear | None = None) -> None:
        super().__init__()
        if encoder is None and decoder is None:
            raise ValueError("a Transformer needs an encoder, a decoder or both")
        self.embed, self.encoder, self.decoder, self.head = embed, encoder, decoder, head
        self.embed_scale = embed_scale
        self.pooler, self.classifier = pooler, classifier
        if tie_embeddings and head is not None:
            self.head.proj.weight = self.embed.weight

    @property
    def arch(self) -> str:
        if self.encoder is not None and self.decoder is not None:
            return "encoder-decoder"
        return "encoder" if self.decoder is None else "decoder"

    # ------------------------------------------------------------------ forward

    def forward(self, input_ids: Tensor | None, *, attention_mask: Tensor | None = None,
                segment_ids: Tensor | None = None, position_ids: Tensor | None = None,
                token_type_ids: Tensor | None = None, decoder_input_ids: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None, decoder_segment_ids: Tensor | None = None,
                decoder_position_ids: Tensor | None = None, causal: bool | None = None,
                prefix_lengths: Tensor | None = None, kv_cache: KVCache | None = None,
                output_hidden_states: bool = False) -> ModelOutput:
        """Logits and hidden states.

        Args:
            input_ids: (B, T) tokens of the encoder (encoder, encoder-decoder) or the decoder (decoder-only).
                An encoder-decoder whose ``kv_cache`` already holds the encoder output takes ``None``.
            attention_mask: (B, T) 1 for real tokens, 0 for padding. With a ``kv_cache`` on a decoder-only
                model it covers every key: (B, cached + T).
            segment_ids: (B, T) document ids of packed rows: attention stays inside a document, and
                positions restart at each document unless ``position_ids`` are given.
            position_ids: (B, T) explicit positions (default: arange, continuing after the cache).
            token_type_ids: (B, T) token types (models with ``type_vocab_size > 0``; default zeros).
            decoder_*: the same for the decoder side of an encoder-decoder (its ``decoder_attention_mask``
                covers cached keys too).
            causal: None: decoders are causal, encoders bidirectional. ``False`` runs a decoder
                bidirectionally (masked LM on a decoder); for encoder-decoders it applies to the decoder.
            prefix_lengths: (B,) a prefix LM: the first ``prefix_lengths[b]`` positions of row ``b`` attend to
                each other bidirectionally, and every later position sees them (causal stacks only).
            kv_cache: a :class:`KVCache` to append to and attend over (decoders; incremental decoding).
            output_hidden_states: also return every layer's hidden states, as ``transformers`` does.

        Returns:
            :class:`ModelOutput` with ``logits`` (B, T, V) (None when the model has no token head),
            ``last_hidden_state`` (B, T, D), for encoder-decoders ``encoder_last_hidden_state`` (B, S, D), and
            with ``output_hidden_states`` the tuples ``hidden_states`` (and ``encoder_hidden_states``).

        Raises:
            ValueError: arguments that do not fit the architecture (decoder inputs for a single stack,
                a cache for an encoder, segments with a cache, positions beyond learned embeddings).
        """
        layers: tuple[list[Tensor], list[Tensor]] | None = ([], []) if output_hidden_states else None
        hidden, enc = self._run(input_ids, attention_mask, segment_ids, position_ids, token_type_ids,
                                decoder_input_ids, decoder_attention_mask, decoder_segment_ids,
                                decoder_position_ids, causal, kv_cache, prefix_lengths, layers)
        logits = self.logits(hidden) if self.head is not None else None
        out = ModelOutput(logits=logits, last_hidden_state=hidden, encoder_last_hidden_state=enc)
        if layers is not None:
            out.hidden_states = tuple(layers[1])  # the token stack's: the decoder's for encoder-decoders
            out.encoder_hidden_states = tuple(layers[0]) if layers[0] else None
        return out

    def hidden(self, input_ids: Tensor | None, *, attention_mask: Tensor | None = None,
               segment_ids: Tensor | None = None, position_ids: Tensor | None = None,
               token_type_ids: Tensor | None = None, decoder_input_ids: Tensor | None = None,
               decoder_attention_mask: Tensor | None = None, decoder_segment_ids: Tensor | None = None,
               decoder_position_ids: Tensor | None = None, causal: bool | None = None,
               prefix_lengths: Tensor | None = None, kv_cache: KVCache | None = None) -> Tensor:
        """Final hidden states (B, T, D), the decoder's for encoder-decoders, without the head."""
        return self._run(input_ids, attention_mask, segment_ids, position_ids, token_type_ids,
                         decoder_input_ids, decoder_attention_mask, decoder_segment_ids, decoder_position_ids,
                         causal, kv_cache, prefix_lengths)[0]

    def logits(self, hidden: Tensor) -> Tensor:
        """The head on hidden states of any leading shape: (..., D) -> (..., V), e.g. ``hidden[mask]``.

        Raises:
            ValueError: the model has no token head (``model.lm_head = false``).
        """
        if self.head is None:
            raise ValueError("this model has no token head (model.lm_head is false): it gives hidden states "
                             "(hidden(), encode()) and, with model.num_labels, classify()")
        return self.head(hidden)

    @property
    def id2label(self) -> list[str] | None:
        """The name of each label of the classifier (``id2label[i]`` for logit ``i``), or None."""
        return self._id2label

    @id2label.setter
    def id2label(self, names) -> None:
        """Set from a list of names or a Hugging Face ``id2label`` mapping (``{"0": "neg", ...}``); None clears.

        Raises:
            ValueError: the model has no classifier; the names are not ``num_labels`` distinct strings; a
                mapping's keys are not ``0 .. num_labels - 1``.
        """
        if names is None:
            self._id2label = None
            return
        if self.classifier is None:
            raise ValueError("label names (id2label) need a classifier: this model has none (model.num_labels is 0)")
        n = self.classifier.out_features
        if isinstance(names, dict):
            if sorted(str(k) for k in names) != sorted(str(i) for i in range(n)):
                raise ValueError(f"id2label must map the ids 0..{n - 1} (model.num_labels = {n}), got keys "
                                 f"{sorted(names)}")
            names = [names[k] for k in sorted(names, key=int)]
        elif not isinstance(names, (list, tuple)):
            raise ValueError(f"id2label must be a list of names or an id -> name mapping, got {names!r}")
        names = list(names)
        if len(names) != n or not all(isinstance(x, str) and x for x in names) or len(set(names)) != n:
            raise ValueError(f"id2label must be {n} distinct non-empty names (model.num_labels = {n}), got {names}")
        self._id2label = names

    def classify(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Sequence-classification logits (B, num_labels) from hidden states (B, T, D). It never computes a loss.

        Encoders take the first token ([CLS]), through the pooler (dense + tanh) when the model has one, then
        the classifier (BERT's ``BertForSequenceClassification``). Decoders take the last real token: in each
        row the last position where ``attention_mask`` (B, T) is 1, which serves right- and left-padded rows
        alike, or the last position without a mask (GPT-2's and Llama's ``ForSequenceClassification``, which
        find it as the last token that is not ``pad_token_id``). Left-padded rows need ``position_ids`` that
        start at their first real token in :meth:`hidden`, as in generation.

        Raises:
            ValueError: the model has no classifier (``model.num_labels`` is 0).
        """
        if self.classifier is None:
            raise ValueError("this model has no classifier: build it with model.num_labels > 0")
        if self.arch == "encoder":
            pooled = hidden[:, 0]  # (B, D)
            if self.pooler is not None:
                pooled = self.pooler(pooled)
        elif attention_mask is None:
            pooled = hidden[:, -1]  # (B, D)
        else:
            T = hidden.shape[1]
            if attention_mask.shape != hidden.shape[:2]:
                raise ValueError(f"attention mask has shape {tuple(attention_mask.shape)}, expected "
                                 f"{tuple(hidden.shape[:2])} (that of the hidden states)")
            positions = torch.arange(T, device=hidden.device)
            last = (positions * (attention_mask != 0)).amax(dim=1)  # (B,) last index with mask 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, D)
        return self.classifier(pooled)  # (B, num_labels)

    def encode(self, input_ids: Tensor, *, attention_mask: Tensor | None = None,
               segment_ids: Tensor | None = None, position_ids: Tensor | None = None,
               token_type_ids: Tensor | None = None, causal: bool | None = None,
               collect: list[Tensor] | None = None) -> Tensor:
        """Hidden states (B, T, D) of the encoder stack (encoder and encoder-decoder models)."""
        if self.encoder is None:
            raise ValueError("encode() needs a model with an encoder; this one is a decoder")
        return self._stack(self.encoder, input_ids, attention_mask, segment_ids, position_ids, token_type_ids,
                           causal if causal is not None else self.encoder.causal, collect=collect)

    def _stack(self, stack: Stack, ids: Tensor, attention_mask: Tensor | None, segment_ids: Tensor | None,
               position_ids: Tensor | None, token_type_ids: Tensor | None, causal: bool,
               cache: KVCache | None = None, context: Tensor | None = None,
               context_mask: Tensor | None = None, prefix_lengths: Tensor | None = None,
               collect: list[Tensor] | None = None) -> Tensor:
        offset = cache.length if cache is not None else 0
        if cache is not None and segment_ids is not None:
            raise ValueError("segment ids (packed documents) cannot be combined with a KV cache")
        if position_ids is None:
            n = offset + ids.shape[1]
            limit = stack.pos_emb.num_embeddings - stack.pos_offset if stack.pos_emb else None
            if limit is not None and n > limit:
                raise ValueError(f"{n} positions are more than the model's maximum sequence length "
                                 f"({limit}) for learned position embeddings")
            if segment_ids is not None:
                position_ids = positions_from_segments(segment_ids)  # (B, T)
            elif stack.pos_pad_id is not None:  # RoBERTa: count real tokens only, padding at -1
                position_ids = positions_from_tokens(ids, stack.pos_pad_id, offset)  # (B, T)
            else:
                position_ids = torch.arange(offset, offset + ids.shape[1], device=ids.device)[None]  # (1, T)
        if attention_mask is not None and attention_mask.shape[1] != offset + ids.shape[1]:
            raise ValueError(f"attention mask has {attention_mask.shape[1]} positions, expected "
                             f"{offset + ids.shape[1]} (cached + new tokens)")
        x = self.embed(ids)  # (B, T, D)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        h = stack(x, position_ids, causal=causal, token_type_ids=token_type_ids, key_padding=attention_mask,
                  segment_ids=segment_ids, context=context, context_mask=context_mask, cache=cache,
                  prefix_lengths=prefix_lengths, collect=collect)
        if cache is not None:
            cache.advance(ids.shape[1])
        return h

    def _run(self, input_ids, attention_mask, segment_ids, position_ids, token_type_ids, decoder_input_ids,
             decoder_attention_mask, decoder_segment_ids, decoder_position_ids, causal, kv_cache, prefix_lengths,
             layers: tuple[list[Tensor], list[Tensor]] | None = None):
        """Final hidden states of the token stack and (encoder-decoders) of the encoder; ``layers`` (encoder's,
        token stack's) collects every layer's when given."""
        enc_layers, dec_layers = layers if layers is not None else (None, None)
        decoder_args = (decoder_input_ids, decoder_attention_mask, decoder_segment_ids, decoder_position_ids)
        if self.arch != "encoder-decoder":
            if any(a is not None for a in decoder_args):
                raise ValueError(f"decoder_* inputs are for encoder-decoder models; this is an {self.arch} "
                                 "model: pass its tokens as input_ids")
            if input_ids is None:
                raise ValueError("input_ids are required")
            stack = self.encoder if self.decoder is None else self.decoder
            if kv_cache is not None and stack is self.encoder:
                raise ValueError("a KV cache is for decoders; this model is an encoder")
            h = self._stack(stack, input_ids, attention_mask, segment_ids, position_ids, token_type_ids,
                            causal if causal is not None else stack.causal, kv_cache, prefix_lengths=prefix_lengths,
                            collect=dec_layers)
            return h, None

        if decoder_input_ids is None:
            raise ValueError("an encoder-decoder model needs decoder_input_ids "
                             "(use encode() for the encoder alone)")
        if kv_cache is not None and kv_cache.cross:  # the encoder ran on an earlier call
            if input_ids is not None:
                raise ValueError("the KV cache already holds the encoder output; pass input_ids=None")
            enc, context_mask = None, kv_cache.cross_mask
        else:
            if input_ids is None:
                raise ValueError("input_ids (the encoder's tokens) are required")
            enc = self.encode(input_ids, attention_mask=attention_mask, segment_ids=segment_ids,
                              position_ids=position_ids, token_type_ids=token_type_ids, collect=enc_layers)
            context_mask = build_mask(decoder_input_ids.shape[1], input_ids.shape[1], causal=False,
                                      key_padding=attention_mask, q_segments=decoder_segment_ids,
                                      k_segments=segment_ids if decoder_segment_ids is not None else None,
                                      self_attention=False, device=input_ids.device)
            if kv_cache is not None:
                if decoder_segment_ids is not None:
                    raise ValueError("segment ids (packed documents) cannot be combined with a KV cache")
                kv_cache.cross_mask = context_mask
        dec_causal = causal if causal is not None else self.decoder.causal
        h = self._stack(self.decoder, decoder_input_ids, decoder_attention_mask, decoder_segment_ids,
                        decoder_position_ids, None, dec_causal, kv_cache, context=enc,
                        context_mask=context_mask, collect=dec_layers)
        return h, enc

    # ------------------------------------------------------------------ accounting

    def _embedding_tables(self) -> list[nn.Embedding]:
        """Lookup tables that do no matmul: position and token-type embeddings, and the token embedding when
        the head has its own projection (untied)."""
        tables = [m for s in (self.encoder, self.decoder) if s is not None for m in (s.pos_emb, s.type_emb)
                  if m is not None]
        if self.head is None or self.head.proj.weight is not self.embed.weight:
            tables.append(self.embed)
        return tables

    def for_inference(self, dtype: torch.dtype = torch.float32, quantize: str | None = None,
                      rows: int = 1) -> Transformer:
        """Ready the model for inference only, in place: eval mode, no gradients, weights in ``dtype`` (float32,
        or bfloat16: half the bytes a token reads), and the decoder and head weights laid out for decoding once
        and for good (:func:`~lmlab.model.layers.inference_layout`: each weight held once, nothing packed per
        ``generate`` call; bfloat16 ones packed for oneDNN or fbgemm on x86). ``quantize="int8"`` then stores
        every Linear weight and the token embedding as int8 with per-channel scales
        (:func:`~lmlab.model.quant.quantize_int8`; a quarter of float32's bytes), the rest staying in ``dtype``;
        ``"int8-dynamic"`` also quantizes the activations of the products, as ``torch.ao`` does. ``rows``: the
        rows a decoding step will multiply (batch x beams), for which the float32 layout is chosen. Returns the
        model."""
        if quantize not in (None, *QUANTIZE):
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)} or None, got {quantize!r}")
        self.eval().requires_grad_(False).to(dtype)
        if quantize in ("int8", "int8-dynamic"):
            quantize_int8(self, dynamic=quantize == "int8-dynamic")
        if self.decoder is not None:
            inference_layout(self.decoder, self.head, shared=(self.embed.weight,), rows=rows)
        return_freed_memory()
        return self

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (tied tensors counted once).

        With ``non_embedding`` the lookup-only tables are left out: position and token-type embeddings
        (nanoGPT's convention) and, when the head is untied, the input token embedding. A tied token
        embedding is counted, since it is also the output projection.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(t.weight.numel() for t in self._embedding_tables())
        return n

    def flops_per_token(self, seq_len: int, decoder_seq_len: int | None = None,
                        head_fraction: float = 1.0) -> float:
        """Training FLOPs per token (forward + backward = 3 x forward), matmuls only.

        Forward FLOPs per token of a stack = ``2 * sum(in * out)`` over its Linear layers (so GQA, gated
        MLPs and cross-attention count with their real shapes) ``+ 4 * n_heads * head_dim * T_k`` per
        attention layer (scores ``QK^T`` and ``AV``; full ``T_k`` even when causal, as in nanoGPT/PaLM:
        ``6N + 12 L d T``). The head adds ``2 * sum(in * out)`` of its Linear layers (the projection
        ``2 D V``, and BERT's transform) for every output token. Embedding lookups, norms and activations
        are not counted. ``head_fraction`` is the share of tokens the head runs at (an objective that
        projects only its scored positions, like masked LM, runs it at about 15%). Encoder-decoders
        average over all ``seq_len + decoder_seq_len`` tokens (the unit of :meth:`Batch.num_tokens`), and
        count the cross-attention's key/value projection at the encoder's tokens, where it runs;
        ``decoder_seq_len`` defaults to ``seq_len``. Recomputation (activation checkpointing) is not counted.
        """
        def stack_flops(stack: Stack, t_self: int, t_cross: int) -> float:
            attn = sum(4 * b.attn.n_heads * b.attn.head_dim * t_self
                       + (4 * b.cross_attn.n_heads * b.cross_attn.head_dim * t_cross if b.cross_attn else 0)
                       for b in stack.layers)
            return 2 * linear_macs(stack) + attn

        head = 2 * linear_macs(self.head) * head_fraction if self.head is not None else 0.0
        if self.arch == "encoder-decoder":
            t_dec = decoder_seq_len or seq_len
            cross_kv = 2 * sum(linear_macs(b.cross_attn.kv) for b in self.decoder.layers if b.cross_attn)
            total = seq_len * (stack_flops(self.encoder, seq_len, 0) + cross_kv) + t_dec * (
                stack_flops(self.decoder, t_dec, seq_len) - cross_kv + head)
            return 3 * total / (seq_len + t_dec)
        stack = self.encoder if self.decoder is None else self.decoder
        return 3 * (stack_flops(stack, seq_len, 0) + head)
