"""The Transformer: every tiny preset runs, and its masks, positions, heads and accounting are right."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY, V, ids, tiny

from lmlab.config import model_preset
from lmlab.model import ModelOutput, build_model

ATOL = 1e-5


def _inputs(model, x: torch.Tensor, **kw) -> dict:
    """Keyword arguments running ``x`` through the model; encoder-decoders get ``x`` on both sides."""
    if model.arch == "encoder-decoder":
        return dict(decoder_input_ids=x, **kw)
    return kw


@pytest.mark.parametrize("name", TINY)
def test_forward_backward(name):
    model = tiny(name).train()
    x = ids(2, 16)
    out = model(x, **_inputs(model, x[:, :11]))
    assert isinstance(out, ModelOutput)
    T = 11 if model.arch == "encoder-decoder" else 16
    assert out.logits.shape == (2, T, V)
    assert out.last_hidden_state.shape == (2, T, model.config.d_model) and out.hidden_states is None
    assert out[0] is out.logits and out["last_hidden_state"] is out.last_hidden_state  # as transformers' outputs
    if model.arch == "encoder-decoder":
        assert out.encoder_last_hidden_state.shape == (2, 16, model.config.d_model)
    out.logits.float().pow(2).mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name,causal", [("gpt2-tiny", True), ("llama-tiny", True), ("bert-tiny", False)])
def test_causality(name, causal):
    model = tiny(name)
    x = ids(1, 12)
    y = x.clone()
    y[0, 8] = (x[0, 8] + 1) % V  # change a token in the future of positions 0..7
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    assert torch.allclose(a[:, :8], b[:, :8], atol=ATOL) == causal
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=ATOL)


def test_causal_false_runs_a_decoder_bidirectionally():
    model = tiny("gpt2-tiny")
    x = ids(1, 12)
    y = x.clone()
    y[0, 8] = (x[0, 8] + 1) % V
    with torch.no_grad():
        a, b = model(x, causal=False).logits, model(y, causal=False).logits
    assert not torch.allclose(a[:, :8], b[:, :8], atol=ATOL)


def test_t5_decoder_is_causal_encoder_is_not():
    model = tiny("t5-tiny")
    src, tgt = ids(1, 10), ids(1, 8, seed=1)
    tgt2 = tgt.clone()
    tgt2[0, 5] = (tgt[0, 5] + 1) % V
    with torch.no_grad():
        a = model(src, decoder_input_ids=tgt).logits
        b = model(src, decoder_input_ids=tgt2).logits
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=ATOL, rtol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=ATOL)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "bert-tiny", "t5-tiny"])
def test_packed_documents_match_running_each_alone(name):
    model = tiny(name)
    doc1, doc2 = ids(1, 7, seed=1), ids(1, 9, seed=2)
    packed = torch.cat([doc1, doc2], dim=1)  # (1, 16)
    segments = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        if model.arch == "encoder-decoder":  # the encoder side
            run = lambda x, **kw: model.encode(x, **kw)
        else:
            run = lambda x, **kw: model(x, **kw).logits
        both = run(packed, segment_ids=segments)
        torch.testing.assert_close(both[:, :7], run(doc1), atol=ATOL, rtol=0)
        torch.testing.assert_close(both[:, 7:], run(doc2), atol=ATOL, rtol=0)


def test_packed_encoder_decoder_pairs_match_running_each_alone():
    model = tiny("t5-tiny")
    src1, src2, tgt1, tgt2 = ids(1, 6, seed=1), ids(1, 8, seed=2), ids(1, 4, seed=3), ids(1, 5, seed=4)
    with torch.no_grad():
        packed = model(torch.cat([src1, src2], 1), segment_ids=torch.tensor([[0] * 6 + [1] * 8]),
                       decoder_input_ids=torch.cat([tgt1, tgt2], 1),
                       decoder_segment_ids=torch.tensor([[0] * 4 + [1] * 5])).logits
        one = model(src1, decoder_input_ids=tgt1).logits
        two = model(src2, decoder_input_ids=tgt2).logits
    torch.testing.assert_close(packed[:, :4], one, atol=ATOL, rtol=0)
    torch.testing.assert_close(packed[:, 4:], two, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "bert-tiny", "t5-tiny"])
def test_right_padding_matches_unpadded(name):
    model = tiny(name)
    long, short = ids(1, 12, seed=1), ids(1, 7, seed=2)
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], 1)])  # (2, 12)
    mask = torch.ones_like(batch)
    mask[1, 7:] = 0
    with torch.no_grad():
        if model.arch == "encoder-decoder":  # padding on both sides
            tgt = torch.cat([ids(1, 6, seed=3), torch.cat([ids(1, 4, seed=4), torch.zeros(1, 2).long()], 1)])
            dmask = torch.ones_like(tgt)
            dmask[1, 4:] = 0
            out = model(batch, attention_mask=mask, decoder_input_ids=tgt,
                        decoder_attention_mask=dmask).logits
            alone = [model(long, decoder_input_ids=tgt[:1]).logits,
                     model(short, decoder_input_ids=tgt[1:, :4]).logits]
            n = [6, 4]
        else:
            out = model(batch, attention_mask=mask).logits
            alone = [model(long).logits, model(short).logits]
            n = [12, 7]
    assert torch.isfinite(out).all()  # padding queries attend themselves: no NaN
    torch.testing.assert_close(out[:1, :n[0]], alone[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out[1:, :n[1]], alone[1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["bert-tiny", "gpt2-tiny"])
def test_sparse_logits_equal_full_logits(name):
    model = tiny(name)
    x = ids(2, 10)
    scored = torch.rand(2, 10, generator=torch.Generator().manual_seed(0)) < 0.3
    with torch.no_grad():
        full = model(x, causal=False).logits
        hidden = model.hidden(x, causal=False)
        sparse = model.logits(hidden[scored])  # (N, V)
    assert sparse.shape == (int(scored.sum()), V)
    torch.testing.assert_close(sparse, full[scored], atol=1e-6, rtol=0)


def test_segment_positions_restart_for_learned_positions():
    model = tiny("gpt2-tiny")
    x = ids(1, 10)
    seg = torch.tensor([[0] * 4 + [1] * 6])
    explicit = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5]])
    with torch.no_grad():
        a = model(x, segment_ids=seg).logits
        b = model(x, segment_ids=seg, position_ids=explicit).logits
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", TINY)
def test_num_params(name):
    model = tiny(name)
    total = sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=False) == total
    cfg = model.config
    lookups = 0
    for stack in (model.encoder, model.decoder):
        if stack is not None and stack.pos_emb is not None:
            lookups += cfg.max_seq_len * cfg.d_model
        if stack is not None and stack.type_emb is not None:
            lookups += cfg.type_vocab_size * cfg.d_model
    if not cfg.tie_embeddings:
        lookups += V * cfg.d_model  # the input embedding, when the head has its own matrix
    assert model.num_params() == total - lookups


def test_flops_per_token_by_hand():
    model = build_model(model_preset("gpt2-tiny", vocab_size=100))  # L=2, d=64, ff=256, 4 heads of 16
    T = 16
    linear_per_layer = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64  # qkv, o, up, down
    forward = 2 * (2 * linear_per_layer + 64 * 100) + 2 * 4 * 64 * T  # matmuls + head; QK^T and AV
    assert model.flops_per_token(T) == 3 * forward == 652800


def test_flops_per_token_encoder_decoder_and_gqa():
    model = build_model(model_preset("t5-tiny", vocab_size=100))  # d=64, ff=160 (gated), 4 heads
    S, T = 10, 6
    self_attn, cross_q_o, cross_kv, mlp = 64 * 192 + 64 * 64, 64 * 64 + 64 * 64, 64 * 128, 64 * 320 + 160 * 64
    enc = 2 * 2 * (self_attn + mlp + cross_kv) + 2 * 4 * 64 * S  # the decoder's K/V projections read encoder rows
    dec = 2 * 2 * (self_attn + cross_q_o + mlp) + 2 * (4 * 64 * T + 4 * 64 * S) + 2 * 64 * 100
    assert model.flops_per_token(S, T) == pytest.approx(3 * (S * enc + T * dec) / (S + T))
    llama = build_model(model_preset("llama-tiny", vocab_size=100))  # kv_heads 2: qkv is 64 -> (4 + 2*2) * 16
    per_layer = 64 * 128 + 64 * 64 + 64 * 320 + 160 * 64
    assert llama.flops_per_token(8) == 3 * (2 * (2 * per_layer + 64 * 100) + 2 * 4 * 64 * 8)


def test_wrong_arguments_are_errors():
    gpt = tiny("gpt2-tiny")
    x = ids(1, 5)
    with pytest.raises(TypeError):
        gpt(x, labels=x)
    with pytest.raises(ValueError, match="encoder-decoder"):
        gpt(x, decoder_input_ids=x)
    with pytest.raises(ValueError, match="token-type"):
        gpt(x, token_type_ids=torch.zeros_like(x))
    with pytest.raises(ValueError, match="maximum sequence length"):
        gpt(ids(1, 300))
    with pytest.raises(ValueError, match="decoder_input_ids"):
        tiny("t5-tiny")(x)
    with pytest.raises(ValueError, match="KV cache"):
        from lmlab.model import KVCache
        tiny("bert-tiny")(x, kv_cache=KVCache(8))


def test_dropout_only_in_training():
    model = tiny("gpt2-tiny", dropout=0.5)
    x = ids(1, 8)
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)
        model.train()
        assert not torch.equal(model(x).logits, model(x).logits)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_prefix_lm_mask(name):
    """A prefix is read bidirectionally; everything after it stays causal."""
    torch.manual_seed(0)
    model = build_model(model_preset(name, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 10))
    prefix = torch.tensor([4, 7])
    with torch.no_grad():
        base = model(ids, prefix_lengths=prefix).logits
        changed = ids.clone()
        changed[:, 3] = (changed[:, 3] + 1) % 50  # inside both prefixes
        out = model(changed, prefix_lengths=prefix).logits
        assert not torch.allclose(out[:, :3], base[:, :3])  # earlier prefix positions see position 3
        late = ids.clone()
        late[:, 8] = (late[:, 8] + 1) % 50  # after both prefixes
        out = model(late, prefix_lengths=prefix).logits
        torch.testing.assert_close(out[:, :8], base[:, :8], rtol=0, atol=0)  # nothing before it sees it
        # a zero prefix is causal LM; a full one is the bidirectional model
        torch.testing.assert_close(model(ids, prefix_lengths=torch.zeros(2, dtype=torch.long)).logits,
                                   model(ids).logits)
        torch.testing.assert_close(model(ids, prefix_lengths=torch.full((2,), 10)).logits,
                                   model(ids, causal=False).logits)


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny"])
def test_activation_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    model = build_model(model_preset(name, vocab_size=50, dropout=0.1)).train()
    x = torch.randint(0, 50, (2, 12))
    extra = {"decoder_input_ids": torch.randint(0, 50, (2, 7))} if name == "t5-tiny" else {}

    def grads(checkpoint: bool) -> list[torch.Tensor]:
        for stack in (model.encoder, model.decoder):
            if stack is not None:
                stack.checkpoint_blocks = checkpoint
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks (checkpointing replays the RNG state)
        model(x, **extra).logits.square().mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_decoder_classify_takes_the_last_real_token(name):
    """Right- and left-padded rows give the logits of each row alone (its last token), within 1e-5."""
    model = tiny(name, num_labels=3)
    assert model.classifier.bias is None  # Hugging Face's ``score``
    rows = [ids(1, n, seed=n)[0] for n in (12, 7, 3)]
    T = 12
    right = torch.zeros(3, T, dtype=torch.long)
    left = torch.zeros(3, T, dtype=torch.long)
    right_mask, left_mask = torch.zeros_like(right), torch.zeros_like(left)
    for i, r in enumerate(rows):
        right[i, :len(r)], right_mask[i, :len(r)] = r, 1
        left[i, T - len(r):], left_mask[i, T - len(r):] = r, 1
    left_positions = (left_mask.cumsum(1) - 1).clamp(min=0)  # each row's positions start at its first token
    with torch.no_grad():
        alone = torch.cat([model.classify(model.hidden(r[None])) for r in rows])  # (3, 3)
        got_right = model.classify(model.hidden(right, attention_mask=right_mask), attention_mask=right_mask)
        got_left = model.classify(model.hidden(left, attention_mask=left_mask, position_ids=left_positions),
                                  attention_mask=left_mask)
        no_mask = model.classify(model.hidden(right), attention_mask=None)
    assert got_right.shape == (3, 3)
    torch.testing.assert_close(got_right, alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_left, alone, atol=ATOL, rtol=0)
    torch.testing.assert_close(no_mask[:1], alone[:1], atol=ATOL, rtol=0)  # no mask: the last position


def test_encoder_classify_takes_the_first_token():
    model = tiny("bert-tiny", lm_head=False, mlm_transform=False, pooler=True, num_labels=2)
    x, mask = ids(2, 9), torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        h = model.hidden(x, attention_mask=mask)
        ref = model.classifier(model.pooler(h[:, 0]))
        torch.testing.assert_close(model.classify(h, attention_mask=mask), ref, atol=0, rtol=0)
    assert model.classifier.bias is not None


def test_classification_config_and_label_names():
    from lmlab.errors import ConfigError

    with pytest.raises(ConfigError, match="needs an encoder .* or a decoder"):
        model_preset("t5-tiny", vocab_size=V, num_labels=2)
    with pytest.raises(ConfigError, match="model.pooler is for encoders"):
        model_preset("gpt2-tiny", vocab_size=V, pooler=True, num_labels=2)
    model = tiny("gpt2-tiny", num_labels=3)
    assert model.id2label is None
    model.id2label = ["python", "libs", "net"]
    assert model.id2label == ["python", "libs", "net"]
    model.id2label = {"1": "b", "0": "a", "2": "c"}  # a Hugging Face mapping
    assert model.id2label == ["a", "b", "c"]
    for bad in (["a", "b"], ["a", "a", "b"], {"0": "a", "1": "b", "3": "c"}, "abc", ["a", "b", 3]):
        with pytest.raises(ValueError, match="id2label"):
            model.id2label = bad
    with pytest.raises(ValueError, match="need a classifier"):
        tiny("gpt2-tiny").id2label = ["a"]
    with pytest.raises(ValueError, match="no classifier"):
        tiny("gpt2-tiny").classify(torch.zeros(1, 2, 64))


@pytest.mark.parametrize("name", TINY)
def test_output_hidden_states_as_transformers(name):
    model = tiny(name).eval()
    x = ids(2, 16)
    with torch.no_grad():
        out = model(x, **_inputs(model, x[:, :11]), output_hidden_states=True)
        plain = model(x, **_inputs(model, x[:, :11]))
    stack = model.decoder if model.decoder is not None else model.encoder
    assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) == len(stack.layers) + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)  # after the final norm
    assert torch.equal(out.last_hidden_state, plain.last_hidden_state) and torch.equal(out.logits, plain.logits)
    if model.arch == "encoder-decoder":
        assert len(out.encoder_hidden_states) == len(model.encoder.layers) + 1
        assert torch.equal(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)
    headless = ModelOutput(logits=None, last_hidden_state=out.last_hidden_state)
    assert headless[0] is out.last_hidden_state  # sentence-embedding code's model_output[0]
