"""Generation: the KV cache changes nothing, padding changes nothing, and tokens match Hugging Face ``generate``."""

from __future__ import annotations

import contextlib
import sys
import tempfile

import pytest
import torch

from lmlab.config import model_preset
from lmlab.infer import InferenceError, generate, generate_text
from lmlab.infer.generate import MIN_TOKENS_FOR_LAYOUT, _process
from lmlab.interop import load_hf
from lmlab.model import build_model

transformers = pytest.importorskip("transformers")

V = 97


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    # a larger init than the default 0.02 gives peaked, varied next-token distributions (not one repeated token)
    return build_model(model_preset(name, vocab_size=V, init_std=0.3, **overrides)).eval()


def rand_ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, V - 1, (B, T), generator=torch.Generator().manual_seed(seed))


def uncached_greedy(model, ids: torch.Tensor, n: int, src: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: re-run the whole sequence for every new token, take the argmax."""
    x = ids
    for _ in range(n):
        out = model(x) if src is None else model(src, decoder_input_ids=x)
        x = torch.cat([x, out.logits[:, -1].argmax(-1, keepdim=True)], 1)
    return x


def left_pad(rows: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r):], mask[i, T - len(r):] = r, 1
    return ids, mask


# --------------------------------------------------------------------------- cache, beams, padding


def assert_cached_greedy_is_uncached(model, n: int = 10) -> None:
    """``generate`` (KV cache, decode layout) gives the tokens of the uncached loop, on 2 prompts."""
    with torch.no_grad():
        if model.config.arch == "encoder-decoder":
            src = rand_ids(2, 9, seed=1)
            got = generate(model, src, max_new_tokens=n, decoder_start_token_id=0)
            ref = uncached_greedy(model, torch.zeros(2, 1, dtype=torch.long), n, src=src)
        else:
            prompt = rand_ids(2, 6)
            got = generate(model, prompt, max_new_tokens=n)
            ref = uncached_greedy(model, prompt, n)
    assert torch.equal(got, ref)
    assert len(set(got[:, -n:].flatten().tolist())) > 3  # a real sequence, not one repeated token


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "t5-tiny"])
def test_cached_greedy_equals_the_uncached_loop(name):
    assert_cached_greedy_is_uncached(tiny(name))


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny"])
def test_chunked_decode_layout_on_two_threads_equals_the_uncached_loop(name):
    """With 2 threads and 256-wide layers, every decoder Linear multiplies by 2 chunks of its input rows while
    decoding, and sums their partial products."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_cached_greedy_is_uncached(tiny(name, d_model=256, d_ff=512), n=8)
    finally:
        torch.set_num_threads(before)


def test_short_generations_keep_the_plain_layout(monkeypatch):
    """Packing the decode layout costs about four decoding steps: shorter generations go without it."""
    module = sys.modules["lmlab.infer.generate"]  # (the package exports the function under the same name)
    packed, real = [], module.decode_layout
    monkeypatch.setattr(module, "decode_layout",
                        lambda *modules, **kw: packed.append(len(modules)) or real(*modules, **kw))
    model, prompt = tiny("gpt2-tiny"), rand_ids(1, 4)
    short = generate(model, prompt, max_new_tokens=MIN_TOKENS_FOR_LAYOUT - 1)
    assert not packed
    long = generate(model, prompt, max_new_tokens=MIN_TOKENS_FOR_LAYOUT)
    assert packed and torch.equal(long[:, :short.shape[1]], short)  # the same greedy tokens either way


def _bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(the weights' bytes, the bytes of every distinct storage the model holds: weights, buffers and the
    decode layout's tensors)."""
    weights = sum(p.numel() * p.element_size() for p in set(model.parameters()))
    tensors = [*model.parameters(), *model.buffers(), *(t for m in model.modules()
                                                         for t in (getattr(m, "decode_weight", None),
                                                                   getattr(m, "decode_bias", None)) if t is not None)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return weights, sum(storages.values())


@pytest.mark.parametrize("name, overrides", [("gpt2-tiny", {}), ("t5-tiny", {}), ("llama-tiny", {}),
                                             ("gpt2-tiny", {"d_model": 256, "d_ff": 512})])
def test_the_inference_layout_is_made_once_and_generates_the_same(monkeypatch, name, overrides):
    """Transformer.for_inference lays the decoder's weights out for decoding in place of nn.Linear's (a tied
    embedding included): the same greedy tokens and nearly the same logits as the plain layout, every weight held
    once (the per-call layout holds two copies while it runs), and nothing packed again by generate."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # 256-wide layers: two chunks
    try:
        plain, ready = tiny(name, **overrides), tiny(name, **overrides).for_inference()
        weights, held = _bytes(ready)
        assert held <= 1.1 * weights and not any(p.requires_grad for p in ready.parameters())
        x = rand_ids(2, 6)
        kw = dict(max_new_tokens=12, decoder_start_token_id=0)
        module = sys.modules["lmlab.infer.generate"]
        inside, real = {}, module.decode_layout

        @contextlib.contextmanager
        def spy(*modules, **kw):  # what each model holds while generate decodes
            with real(*modules, **kw):
                inside.update({id(m): _bytes(m) for m in (plain, ready) if m.decoder is modules[0]})
                yield

        monkeypatch.setattr(module, "decode_layout", spy)
        assert torch.equal(generate(ready, x, **kw), generate(plain, x, **kw))
        assert inside[id(ready)] == (weights, held)  # nothing copied: the layout was made once
        assert inside[id(plain)][1] > 1.3 * weights  # the per-call layout: a second copy of the decoder's
        extra = {"decoder_input_ids": x} if plain.config.arch == "encoder-decoder" else {}
        with torch.no_grad():  # (a few rows take the chunked product: the order of additions differs)
            torch.testing.assert_close(ready(x, **extra).logits, plain(x, **extra).logits, atol=3e-5, rtol=1e-5)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny", "llama-tiny"])
def test_a_model_laid_out_for_many_rows_generates_the_same(monkeypatch, name):
    """for_inference(rows=8), as `lmlab evaluate` loads a model for its batches of beams: the float32 decoder's
    weights packed for oneDNN (but a head tied to the embedding), the same greedy and beam-search tokens as the
    model without it (its per-call layout kept to the chunked one)."""
    import lmlab.model.layers as layers

    plain, ready = tiny(name), tiny(name).for_inference(rows=8)
    packed = [m.packed is not None for m in ready.decoder.modules() if isinstance(m, layers.Linear)]
    assert packed and all(packed) == layers.ONEDNN
    x = rand_ids(8, 6)
    kw = dict(max_new_tokens=12, decoder_start_token_id=0)
    fast = generate(ready, x, **kw), generate(ready, x[:2], num_beams=4, **kw)
    monkeypatch.setattr(layers, "ONEDNN_ROWS", 10**9)
    assert torch.equal(fast[0], generate(plain, x, **kw))
    assert torch.equal(fast[1], generate(plain, x[:2], num_beams=4, **kw))


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny"])
def test_finished_rows_leave_a_greedy_batch(monkeypatch, name):
    """Greedy decoding drops the rows that produced EOS (their cache rows too): each row's tokens are those it
    gets alone, and the batch shrinks as they finish."""
    model = tiny(name)
    x = rand_ids(3, 6)
    kw = dict(max_new_tokens=10, decoder_start_token_id=0, pad_token_id=V - 1)
    free = generate(model, x, **kw)  # no EOS: every row runs to the end
    eos = int(free[0, -8])  # row 0's third new token: it finishes early, the others (most likely) later
    sizes, real = [], type(model).hidden

    def hidden(self, input_ids, **k):  # the rows of each model call
        sizes.append((k["decoder_input_ids"] if k.get("decoder_input_ids") is not None else input_ids).shape[0])
        return real(self, input_ids, **k)

    monkeypatch.setattr(type(model), "hidden", hidden)
    batch = generate(model, x, eos_token_id=eos, **kw)
    assert min(sizes) < 3  # rows left the batch
    for i in range(3):
        alone = generate(model, x[i:i + 1], eos_token_id=eos, **kw)
        assert torch.equal(batch[i, :alone.shape[1]], alone[0]) and (batch[i, alone.shape[1]:] == V - 1).all()


@pytest.mark.parametrize("name", ["gpt2-tiny", "t5-tiny"])
def test_one_beam_is_greedy(name):
    model = tiny(name)
    x = rand_ids(2, 6)
    kw = dict(max_new_tokens=8, decoder_start_token_id=0)
    assert torch.equal(generate(model, x, num_beams=1, **kw), generate(model, x, **kw))


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
@pytest.mark.parametrize("beams", [1, 3])
def test_left_padded_batch_equals_one_by_one(name, beams):
    model = tiny(name)
    rows = [rand_ids(1, n, seed=n)[0] for n in (7, 3, 5)]
    pad = V - 1
    ids, mask = left_pad(rows, pad)
    # an EOS that one row produces early, so finished rows are filled with the pad token
    eos = int(generate(model, rows[1][None], max_new_tokens=3, num_beams=beams)[0, -1])
    kw = dict(max_new_tokens=8, num_beams=beams, eos_token_id=eos, pad_token_id=pad)
    batch = generate(model, ids, mask, **kw)
    assert batch.shape[0] == 3 and torch.equal(batch[:, :ids.shape[1]], ids)
    ended = False
    for i, r in enumerate(rows):
        alone = generate(model, r[None], **kw)[0, len(r):]  # its continuation
        got = batch[i, ids.shape[1]:]
        assert torch.equal(got[:len(alone)], alone)
        assert (got[len(alone):] == pad).all()  # after its EOS (or the end of the one-row run): padding
        ended |= eos in alone.tolist()
    assert ended or not torch.equal(batch, generate(model, ids, mask, **{**kw, "eos_token_id": None}))


# --------------------------------------------------------------------------- parity with transformers


def imported(hf: torch.nn.Module) -> torch.nn.Module:
    """The lmlab model holding ``hf``'s weights, through lmlab's own Hugging Face importer."""
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        return load_hf(tmp)[0]


def hf_gpt2() -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random Hugging Face GPT-2 (peaked init) and the lmlab model with the same weights."""
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                  activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                  attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
                                  initializer_range=0.3)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    return hf, imported(hf)


def hf_t5() -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = model_preset("t5-tiny", vocab_size=V)
    hf_cfg = transformers.T5Config(vocab_size=V, d_model=cfg.d_model, d_kv=cfg.head_dim, d_ff=cfg.d_ff,
                                   num_layers=cfg.n_layers, num_decoder_layers=cfg.decoder_layers,
                                   num_heads=cfg.n_heads, relative_attention_num_buckets=cfg.rel_buckets,
                                   relative_attention_max_distance=cfg.rel_max_distance, dropout_rate=0.0,
                                   layer_norm_epsilon=cfg.norm_eps, feed_forward_proj="gated-gelu",
                                   tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1, initializer_factor=8.0)
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    return hf, imported(hf)


@pytest.fixture(scope="module")
def gpt2_pair():
    return hf_gpt2()


@pytest.fixture(scope="module")
def t5_pair():
    return hf_t5()


def _padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    return left_pad([rand_ids(1, 7)[0], rand_ids(1, 4, seed=1)[0]], pad=V - 1)


def _hf_generate(hf, ids, mask, **kw) -> torch.Tensor:
    kw.setdefault("do_sample", False)
    kw.setdefault("top_k", 0)  # Hugging Face's default generation config has top_k=50
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, **kw)


@pytest.mark.parametrize("length_penalty, early_stopping", [(1.0, False), (0.5, True), (2.0, "never"),
                                                            (-1.0, False)])
def test_gpt2_beam_search_matches_transformers(gpt2_pair, length_penalty, early_stopping):
    hf, ours = gpt2_pair
    ids, mask = _padded_prompts()
    kw = dict(max_new_tokens=12, num_beams=4, num_return_sequences=2, length_penalty=length_penalty,
              early_stopping=early_stopping, pad_token_id=V - 1)
    unended = generate(ours, ids, mask, **kw)
    kw["eos_token_id"] = int(unended[0, ids.shape[1] + 3])  # a token the best beam would produce
    got = generate(ours, ids, mask, **kw)
    assert torch.equal(got, _hf_generate(hf, ids, mask, **kw))
    assert got.shape[0] == 4 and not torch.equal(got, unended)  # finished hypotheses changed the result


def test_gpt2_greedy_sampling_and_penalty_match_transformers(gpt2_pair):
    hf, ours = gpt2_pair
    ids, mask = _padded_prompts()
    kw = dict(max_new_tokens=12, pad_token_id=V - 1)
    greedy = generate(ours, ids, mask, **kw)
    assert torch.equal(greedy, _hf_generate(hf, ids, mask, **kw))
    eos = int(greedy[1, -6])  # row 1 ends early, row 0 maybe; finished rows are padded
    kw["eos_token_id"] = eos
    assert torch.equal(generate(ours, ids, mask, **kw), _hf_generate(hf, ids, mask, **kw))
    top1 = generate(ours, ids, mask, do_sample=True, top_k=1, num_return_sequences=2, seed=3, **kw)
    assert torch.equal(top1, _hf_generate(hf, ids, mask, do_sample=True, top_k=1, num_return_sequences=2, **kw))
    assert torch.equal(top1[::2], generate(ours, ids, mask, **kw))  # top-1 sampling is greedy
    # the same seed in torch's generator: the same draws as Hugging Face from the global one
    for opts in (dict(temperature=0.7, top_k=8), dict(top_p=0.8), dict(top_k=20, top_p=0.9, repetition_penalty=1.3)):
        torch.manual_seed(11)
        ref = _hf_generate(hf, ids, mask, do_sample=True, num_return_sequences=3, **{**kw, **opts})
        assert torch.equal(generate(ours, ids, mask, do_sample=True, num_return_sequences=3, seed=11,
                                    **kw, **opts), ref), opts
    # Hugging Face penalizes the prompt's padding too; lmlab does not, so compare without padding
    one = ids[:1]
    assert torch.equal(generate(ours, one, repetition_penalty=1.5, **kw),
                       _hf_generate(hf, one, None, repetition_penalty=1.5, **kw))


def test_gpt2_beam_sampling_matches_transformers(gpt2_pair):
    hf, ours = gpt2_pair
    ids, mask = _padded_prompts()
    kw = dict(max_new_tokens=10, num_beams=3, num_return_sequences=2, do_sample=True, top_k=10, temperature=0.9,
              pad_token_id=V - 1, eos_token_id=int(generate(ours, ids, mask, max_new_tokens=3)[0, -1]))
    torch.manual_seed(4)
    ref = _hf_generate(hf, ids, mask, **kw)
    assert torch.equal(generate(ours, ids, mask, seed=4, **kw), ref)


def test_t5_greedy_and_beam_search_match_transformers(t5_pair):
    hf, ours = t5_pair
    src = rand_ids(2, 9, seed=2)
    mask = torch.ones_like(src)
    mask[1, 6:] = 0  # right-padded encoder input
    greedy = generate(ours, src, mask, max_new_tokens=10, decoder_start_token_id=0, pad_token_id=0)
    assert greedy[:, 0].eq(0).all() and greedy.shape == (2, 11)
    assert torch.equal(greedy, _hf_generate(hf, src, mask, max_new_tokens=10, eos_token_id=None))
    eos = int(greedy[0, 4])
    kw = dict(max_new_tokens=10, num_beams=4, num_return_sequences=3, length_penalty=0.8, eos_token_id=eos,
              pad_token_id=0)
    # Hugging Face fills finished beams with `pad_token_id or eos`: the EOS when the pad id is 0
    got = generate(ours, src, mask, decoder_start_token_id=0, **{**kw, "pad_token_id": eos})
    assert torch.equal(got, _hf_generate(hf, src, mask, **kw))
    assert got.shape[0] == 6 and (got == eos).any()


# --------------------------------------------------------------------------- sampling and processing


def test_sampling_is_reproducible_and_top_p_tiny_is_greedy():
    model = tiny("llama-tiny")
    x = rand_ids(2, 5)
    kw = dict(max_new_tokens=12, do_sample=True, num_return_sequences=2)
    a = generate(model, x, seed=1, **kw)
    assert a.shape == (4, 17) and torch.equal(a, generate(model, x, seed=1, **kw))
    assert not torch.equal(a, generate(model, x, seed=2, **kw))
    assert not torch.equal(a[0], a[1])  # two samples of one prompt differ
    assert torch.equal(generate(model, x, do_sample=True, top_p=1e-6, seed=5, max_new_tokens=12),
                       generate(model, x, max_new_tokens=12))


def test_processing_by_hand():
    scores = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    off = dict(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, min_keep=1)
    got = _process(scores, seen, repetition_penalty=2.0, **off)
    assert torch.equal(got, torch.tensor([[1.0, -2.0, 0.5, 3.0]]))  # positive / 2, negative * 2
    on = dict(off, do_sample=True, repetition_penalty=1.0)
    inf = float("-inf")
    assert torch.equal(_process(scores, None, **{**on, "top_k": 2}), torch.tensor([[2.0, inf, inf, 3.0]]))
    assert torch.equal(_process(scores, None, **{**on, "temperature": 0.5}), scores / 0.5)
    # probabilities ~ [.23, .01, .05, .63]: top_p 0.7 keeps the two largest, 0.5 keeps only the largest
    assert torch.equal(_process(scores, None, **{**on, "top_p": 0.7}), torch.tensor([[2.0, inf, inf, 3.0]]))
    assert torch.equal(_process(scores, None, **{**on, "top_p": 0.5}), torch.tensor([[inf, inf, inf, 3.0]]))


def test_repetition_penalty_is_the_hand_rule_in_the_loop():
    model = tiny("gpt2-tiny")
    x = rand_ids(1, 6)
    seq = x[0].tolist()
    for _ in range(10):
        logits = model(torch.tensor([seq])).logits[0, -1]
        for t in set(seq):
            logits[t] = logits[t] * 1.8 if logits[t] < 0 else logits[t] / 1.8
        seq.append(int(logits.argmax()))
    got = generate(model, x, max_new_tokens=10, repetition_penalty=1.8)
    assert got[0].tolist() == seq
    assert not torch.equal(got, generate(model, x, max_new_tokens=10))  # the penalty changed something


def test_streamer_sees_each_column():
    model = tiny("gpt2-tiny")
    x = rand_ids(2, 4)
    columns = []
    out = generate(model, x, max_new_tokens=6, streamer=columns.append)
    assert len(columns) == 6 and all(c.shape == (2,) for c in columns)
    assert torch.equal(torch.stack(columns, 1), out[:, 4:])


def test_all_rows_finished_stops_early():
    model = tiny("gpt2-tiny")
    x = rand_ids(1, 4)
    full = generate(model, x, max_new_tokens=10)
    eos = int(full[0, 6])  # the third new token
    first = full[0, 4:].tolist().index(eos)
    out = generate(model, x, max_new_tokens=10, eos_token_id=[V - 2, eos])
    assert torch.equal(out, full[:, :4 + first + 1])


# --------------------------------------------------------------------------- text helper


def test_generate_text_returns_continuations(tokenizer):
    model = build_model(model_preset("gpt2-tiny", vocab_size=tokenizer.vocab_size, init_std=0.3)).eval()
    prompts = ["the quick brown", "a"]
    texts = generate_text(model, tokenizer, prompts, max_new_tokens=5)
    assert len(texts) == 2
    for prompt, text in zip(prompts, texts, strict=True):
        ids = torch.tensor([tokenizer.encode(prompt)])
        row = generate(model, ids, max_new_tokens=5, eos_token_id=tokenizer.eos_id)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_id in row:
            row = row[:row.index(tokenizer.eos_id)]
        assert text == tokenizer.decode(row)
    beams = generate_text(model, tokenizer, "the", max_new_tokens=4, num_beams=3, num_return_sequences=2)
    assert len(beams) == 2
    t5 = build_model(model_preset("t5-tiny", vocab_size=tokenizer.vocab_size)).eval()
    assert len(generate_text(t5, tokenizer, ["the fox", "a lazy dog jumps"], max_new_tokens=3)) == 2


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_inference_error():
    gpt2, llama, bert = tiny("gpt2-tiny", max_seq_len=32), tiny("llama-tiny", max_seq_len=32), tiny("bert-tiny")
    x = rand_ids(2, 5)
    cases = [
        (bert, x, {}, "needs a decoder"),
        (gpt2, x, dict(max_new_tokens=-1), "max_new_tokens"),
        (gpt2, x, dict(do_sample=True, top_p=0.0), "top_p"),
        (gpt2, x, dict(top_p=1.5), "top_p"),
        (gpt2, x, dict(top_k=-1), "top_k"),
        (gpt2, x, dict(do_sample=True, temperature=0.0), "temperature"),
        (gpt2, x, dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
        (gpt2, x, dict(num_return_sequences=2), "greedy"),
        (gpt2, x[:, :0], {}, "empty"),
        (gpt2, x, dict(attention_mask=torch.tensor([[1] * 5, [0] * 5])), "empty"),
        (gpt2, x, dict(attention_mask=torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])), "left-padded"),
        (gpt2, x, dict(max_new_tokens=28), "context"),
        (gpt2, x, dict(repetition_penalty=0.0), "repetition_penalty"),
        (gpt2, x, dict(num_beams=2, streamer=print), "streamer"),
        (tiny("t5-tiny"), x, {}, "decoder_start_token_id"),
    ]
    for model, ids, kw, match in cases:
        with pytest.raises(InferenceError, match=match):
            generate(model, ids, **kw)
    assert generate(llama, x, max_new_tokens=40).shape == (2, 45)  # rotary positions go past max_seq_len
    assert torch.equal(generate(gpt2, x, max_new_tokens=0), x)


def test_sentinels_of_a_span_corruption_model_are_kept(monkeypatch, docs):
    """A span-corruption model answers `<extra_id_0> fox <extra_id_1> ...`: printing "" would hide that."""
    from lmlab.tokenizer import train_tokenizer

    gen = sys.modules["lmlab.infer.generate"]  # (lmlab.infer.generate is also the function's name)

    tok = train_tokenizer(docs, kind="bpe", vocab_size=300, sentinels=4)
    s0, s1 = tok.sentinel_ids[:2]
    answer = [tok.pad_id, s0, *tok.encode(" fox"), s1, tok.eos_id]  # the start token, then what the model wrote
    model = build_model(model_preset("t5-tiny", vocab_size=tok.vocab_size)).eval()
    monkeypatch.setattr(gen, "generate", lambda *a, **k: torch.tensor([answer]))
    assert generate_text(model, tok, "the quick brown fox") == ["<extra_id_0> fox<extra_id_1>"]
    assert tok.decode_generated(answer) == "<extra_id_0> fox<extra_id_1>"  # pad and EOS dropped
    assert tok.decode_generated(answer, keep_special_tokens=True) == "<pad><extra_id_0> fox<extra_id_1></s>"
    assert tok.decode_generated([tok.bos_id, *tok.encode("a dog")]) == "a dog"


_MEMORY_CHILD = """
import json, sys, threading
from pathlib import Path
import torch
import lmlab
from lmlab.train import load_model

# a small model loaded first: every import made, torch's threads started, before the baseline
kw = dict(quantize="int8") if sys.argv[2] == "int8" else dict(dtype=sys.argv[2])
load_model(sys.argv[3], for_inference=True, **kw)

def anon():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024

base = anon()
peak, done = [base], threading.Event()
def poll():
    while not done.wait(0.001):
        peak[0] = max(peak[0], anon())
thread = threading.Thread(target=poll)
thread.start()
model, _ = load_model(sys.argv[1], for_inference=True, **kw)
done.set()
thread.join()
weights = sum(p.numel() * p.element_size() for p in set(model.parameters()))
print(json.dumps(dict(weights=weights, loaded=anon() - base, peak=max(peak[0], anon()) - base)))
"""


@pytest.mark.parametrize("source, dtype", [("lmlab", "fp32"), ("lmlab", "bf16"), ("hf-bf16", "bf16"),
                                           ("lmlab", "int8")])
def test_a_model_loaded_to_run_holds_its_weights_once(tmp_path, tokenizer, source, dtype):
    """In a fresh process, a checkpoint (lmlab's, saved in float32; or a Hugging Face directory of bf16 tensors)
    loaded to run holds about its weights' bytes in the dtype asked for (bf16: packed for decoding, float32
    nowhere), and while loading never holds a second copy of the model: it is built empty in that dtype and an
    lmlab checkpoint is read one tensor at a time (it used to be built and initialised in float32, the whole file
    read beside it: 2x the bf16 weights here, 3.1x at 1B parameters); a Hugging Face directory is built empty too,
    its tensors freed as they are copied in (it peaked at 2.7x); a model quantized to int8 is built on the meta
    device, given the file's memory-mapped tensors and quantized a block of rows at a time (it peaked at 3.75x)."""
    import json
    import subprocess

    from lmlab.interop import save_hf
    from lmlab.train.checkpoint import save_model_dir

    def save(model, path):
        if source == "hf-bf16":
            save_hf(model.to(torch.bfloat16), tokenizer, path)
        else:
            path.mkdir()
            save_model_dir(path, model, tokenizer)

    torch.manual_seed(0)
    model = build_model(model_preset("llama-tiny", vocab_size=tokenizer.vocab_size, d_model=512, n_layers=6,
                                     d_ff=1536, n_heads=8, n_kv_heads=8))
    n = sum(p.numel() for p in model.parameters())
    save(model, tmp_path / "model")
    save(build_model(model_preset("llama-tiny", vocab_size=tokenizer.vocab_size)), tmp_path / "warm-up")
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(tmp_path / "model"), dtype,
                          str(tmp_path / "warm-up")], capture_output=True, text=True, check=True).stdout
    r = json.loads(out.splitlines()[-1])

    assert dtype == "int8" or r["weights"] == n * {"fp32": 4, "bf16": 2}[dtype]
    assert r["loaded"] <= 1.1 * r["weights"] and r["peak"] <= 1.5 * r["weights"], r
