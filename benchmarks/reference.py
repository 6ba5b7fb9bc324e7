"""The Hugging Face models the benchmarks measure lmlab against: the same sizes, dropout 0, SDPA attention."""

from __future__ import annotations

import transformers


def hf_gpt2(vocab: int, d: int, layers: int, heads: int, max_len: int, **config) -> transformers.GPT2LMHeadModel:
    """A randomly initialised GPT-2 (tanh GELU, learned positions up to ``max_len``); ``config`` adds options."""
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=max_len, n_embd=d, n_layer=layers, n_head=heads,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        attn_implementation="sdpa", **config))
    assert model.config._attn_implementation == "sdpa"
    return model


def hf_bert(vocab: int, d: int, layers: int, heads: int, max_len: int) -> transformers.BertForMaskedLM:
    """A randomly initialised BERT masked LM (exact GELU, MLP 4 x d, 2 token types)."""
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * d, max_position_embeddings=max_len, type_vocab_size=2, hidden_act="gelu",
        layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        attn_implementation="sdpa"))
    assert model.config._attn_implementation == "sdpa"
    return model


def hf_t5(vocab: int, d: int, layers: int, heads: int, d_ff: int) -> transformers.T5ForConditionalGeneration:
    """A randomly initialised T5 v1.1 (gated GELU, relative bias 32 buckets up to 128, untied head, pad 0 = the
    decoder's start, EOS 1). transformers 5 builds every T5 with its head tied to the embeddings; a v1.1
    checkpoint has its own ``lm_head.weight``, so the head gets its own tensor (initialised as T5 does, std 1)."""
    import torch

    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=vocab, d_model=d, d_kv=d // heads, d_ff=d_ff, num_layers=layers, num_decoder_layers=layers,
        num_heads=heads, feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=False,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, attn_implementation="sdpa"))
    model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab, d))
    assert model.config._attn_implementation == "sdpa" and not model.config.scale_decoder_outputs
    return model
