"""The Transformer: embeddings, attention, MLP, norms, positions; encoder, decoder, encoder-decoder; KV cache.

``build_model(cfg)`` turns a :class:`~lmlab.config.ModelConfig` into a :class:`Transformer`. The model maps
tokens to logits and hidden states; it never computes a loss.
"""

from lmlab.model.builder import build_model, init_weights
from lmlab.model.cache import KVCache
from lmlab.model.positions import positions_from_segments, positions_from_tokens
from lmlab.model.transformer import ModelOutput, Transformer

__all__ = ["KVCache", "ModelOutput", "Transformer", "build_model", "init_weights", "positions_from_segments",
           "positions_from_tokens"]
