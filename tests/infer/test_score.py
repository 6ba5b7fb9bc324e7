"""Scoring: decoder log-likelihood (windowed), encoder pseudo-log-likelihood, encoder-decoder log P(y | x)."""

from __future__ import annotations

import math

import pytest
import tokenizers
import torch
from tokenizers import processors

from lmlab.config import model_preset
from lmlab.infer import InferenceError, generate
from lmlab.infer.score import file_perplexity, score, score_batch, windows
from lmlab.model import build_model
from lmlab.tokenizer import Tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog.", "a model reads text", "data",
         "the small model writes token text over the large data and the quick dog reads it."]


pytestmark = pytest.mark.usefixtures("one_thread")


def with_template(tokenizer: Tokenizer, single: str) -> Tokenizer:
    """A copy of ``tokenizer`` whose post-processor adds special tokens (as a BERT or Llama tokenizer.json)."""
    tok = tokenizers.Tokenizer.from_str(tokenizer.to_json())
    ids = {t: tokenizer.token_to_id(t) for t in single.split() if t != "$A"}
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=list(ids.items()))
    return Tokenizer(tok, dict(tokenizer.roles), tokenizer.additional_special_tokens)


def causal_reference(model, ids: list[int]) -> list[float]:
    """log P(ids[t] | ids[:t]) for t >= 1, in float64, from one forward over the whole sequence."""
    logp = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)  # (T, V)
    return [logp[t - 1, ids[t]].item() for t in range(1, len(ids))]


def test_decoder_log_prob_is_the_chain_rule_in_float64(models, tokenizer):
    dec = models["decoder"]
    for text in TEXTS:
        ids = tokenizer.encode(text)
        s = score(dec, tokenizer, text)
        expected = causal_reference(dec, ids)
        assert s.token_ids == ids[1:]  # no BOS in lmlab's template: the first token is context only
        assert s.token_log_probs == pytest.approx(expected, abs=1e-5)
        assert s.log_prob == pytest.approx(math.fsum(expected), abs=1e-4)
        assert s.perplexity == pytest.approx(math.exp(-math.fsum(expected) / len(expected)), rel=1e-5)


def test_bos_scores_every_token_of_the_text(models, tokenizer):
    dec = models["decoder"]
    text = TEXTS[0]
    ids = tokenizer.encode(text)
    forced = score(dec, tokenizer, text, bos=True)
    assert forced.token_ids == ids
    assert forced.token_log_probs == pytest.approx(causal_reference(dec, [tokenizer.bos_id] + ids), abs=1e-5)
    # A tokenizer whose template puts BOS first (Llama-style) gets the same by default.
    llama_like = with_template(tokenizer, "<s> $A")
    assert score(dec, llama_like, text).token_log_probs == pytest.approx(forced.token_log_probs, abs=1e-6)
    assert score(dec, llama_like, text, bos=False).token_ids == ids[1:]


def test_a_batch_scores_as_each_text_alone(models, tokenizer):
    dec = models["decoder"]
    batch = score_batch(dec, tokenizer, TEXTS, batch_size=3)  # padded rows of different lengths
    for text, s in zip(TEXTS, batch, strict=True):
        assert s.token_log_probs == pytest.approx(score(dec, tokenizer, text).token_log_probs, abs=1e-5)


def test_windows_partition_the_targets():
    for length, W, stride in [(10, 4, 2), (50, 8, 3), (9, 8, 7), (8, 8, 1), (100, 16, 15), (17, 16, 1)]:
        ws = windows(length, W, stride)
        targets = [t for _, end, first in ws for t in range(first, end)]
        assert targets == list(range(1, length))  # every target once, in order
        for start, end, first in ws:
            assert end - start == min(W, length) and first > start  # full windows, context before each target
            assert first == 1 or first - start >= W - stride


def test_window_longer_than_the_text_changes_nothing(models, tokenizer):
    dec = models["decoder"]
    text = TEXTS[3]
    n = len(tokenizer.encode(text))
    plain = score(dec, tokenizer, text)
    for W in (n, n + 5):
        assert score(dec, tokenizer, text, max_length=W, stride=1).token_log_probs == pytest.approx(
            plain.token_log_probs, abs=1e-6)


def test_small_window_scores_each_token_once_with_its_window(models, tokenizer):
    dec = models["decoder"]
    text = TEXTS[3]
    ids = tokenizer.encode(text)
    W, stride = 8, 3
    assert len(ids) > 3 * W
    s = score_batch(dec, tokenizer, [text, TEXTS[1]], max_length=W, stride=stride, batch_size=4)[0]
    expected = []
    for start, end, first in windows(len(ids), W, stride):
        window = ids[start:end]
        expected += causal_reference(dec, window)[first - start - 1:]  # the window's own targets only
    assert s.token_ids == ids[1:]
    assert s.token_log_probs == pytest.approx(expected, abs=1e-5)
    assert s.log_prob != pytest.approx(score(dec, tokenizer, text).log_prob, abs=1e-3)  # less context: differs


def pll_reference(model, ids: list[int], positions: list[int], mask_id: int) -> list[float]:
    out = []
    for j in positions:
        copy = list(ids)
        copy[j] = mask_id
        logp = model.hidden(torch.tensor([copy]), causal=False)
        out.append(model.logits(logp[0, j]).double().log_softmax(-1)[ids[j]].item())
    return out


@pytest.mark.parametrize("kind", ["encoder", "bidirectional decoder"])
def test_pseudo_log_likelihood_is_the_masking_loop(models, tokenizer, kind):
    if kind == "encoder":
        model = models["encoder"]
    else:  # a decoder trained with masked LM attends both ways (lmlab.auto.load_for_task sets this)
        torch.manual_seed(1)
        model = build_model(model_preset("gpt2-tiny", vocab_size=tokenizer.vocab_size)).eval()
        model.decoder.causal = False
    texts = TEXTS[:3]
    got = score_batch(model, tokenizer, texts, batch_size=5)  # chunks cut across texts
    for text, s in zip(texts, got, strict=True):
        ids = tokenizer.encode(text)
        assert s.token_ids == ids
        assert s.token_log_probs == pytest.approx(pll_reference(model, ids, range(len(ids)), tokenizer.mask_id),
                                                  abs=1e-5)


def test_pseudo_log_likelihood_keeps_template_tokens_unscored(models, tokenizer):
    enc = models["encoder"]
    bert_like = with_template(tokenizer, "<s> $A </s>")
    ids = tokenizer.encode(TEXTS[1])
    full = [tokenizer.bos_id] + ids + [tokenizer.eos_id]
    s = score(enc, bert_like, TEXTS[1])
    assert s.token_ids == ids
    assert s.token_log_probs == pytest.approx(
        pll_reference(enc, full, range(1, len(full) - 1), tokenizer.mask_id), abs=1e-5)


def test_seq2seq_is_teacher_forced_log_prob_of_target_and_eos(models, tokenizer):
    t5 = models["seq2seq"]
    pairs = [("the quick brown fox", "a lazy dog."), ("data", "the model reads text and writes tokens"),
             ("a small model", "")]
    got = score_batch(t5, tokenizer, [p[0] for p in pairs], targets=[p[1] for p in pairs], batch_size=2)
    for (src, tgt), s in zip(pairs, got, strict=True):
        y = tokenizer.encode(tgt) + [tokenizer.eos_id]
        dec_in = [tokenizer.pad_id] + y[:-1]  # the decoder starts from pad, as lmlab's objectives train
        logp = t5(torch.tensor([tokenizer.encode(src)]), decoder_input_ids=torch.tensor([dec_in])).logits[0]
        expected = logp.double().log_softmax(-1).gather(-1, torch.tensor(y)[:, None]).squeeze(-1).tolist()
        assert s.token_ids == y
        assert s.token_log_probs == pytest.approx(expected, abs=1e-5)
    other = score(t5, tokenizer, pairs[0][0], target=pairs[0][1], decoder_start_token_id=tokenizer.bos_id)
    assert other.log_prob != pytest.approx(got[0].log_prob, abs=1e-4)


def test_file_perplexity_pools_tokens(models, tokenizer, tmp_path):
    dec, enc = models["decoder"], models["encoder"]
    f = tmp_path / "corpus.txt"
    f.write_text(f"{TEXTS[0]}\n{TEXTS[1]}\n\n{TEXTS[3]}\n", encoding="utf-8")
    for model in (dec, enc):
        lines = score_batch(model, tokenizer, [TEXTS[0], TEXTS[1], TEXTS[3]])
        got = file_perplexity(model, tokenizer, f, chunk=2)
        n = sum(s.num_tokens for s in lines)
        assert (got.num_texts, got.num_tokens) == (3, n)
        assert got.perplexity == pytest.approx(math.exp(-sum(s.log_prob for s in lines) / n), rel=1e-6)
    docs = file_perplexity(dec, tokenizer, f, unit="document")
    assert docs.num_texts == 2
    assert docs.nll == pytest.approx(-sum(s.log_prob for s in score_batch(
        dec, tokenizer, [f"{TEXTS[0]}\n{TEXTS[1]}", TEXTS[3]])), rel=1e-6)


def test_bad_requests(models, tokenizer):
    dec, enc, t5 = models["decoder"], models["encoder"], models["seq2seq"]
    with pytest.raises(InferenceError, match="pass targets"):
        score(t5, tokenizer, "the fox")
    with pytest.raises(InferenceError, match="targets are for encoder-decoders"):
        score(dec, tokenizer, "the fox", target="a dog")
    with pytest.raises(InferenceError, match="stride"):
        score(dec, tokenizer, "the fox", max_length=8, stride=8)
    with pytest.raises(InferenceError, match="learned positions"):
        score(dec, tokenizer, "the fox", max_length=dec.config.max_seq_len + 1)
    with pytest.raises(InferenceError, match="learned positions"):
        score(enc, tokenizer, "the fox " * 200)
    no_bos = Tokenizer(tokenizer.tok, {r: t for r, t in tokenizer.roles.items() if r != "bos"})
    with pytest.raises(InferenceError, match="no BOS"):
        score(dec, no_bos, "the fox", bos=True)
    with pytest.raises(InferenceError, match="encoder-decoder"):
        file_perplexity(t5, tokenizer, "unused.txt")
    headless = build_model(model_preset("bert-tiny", vocab_size=tokenizer.vocab_size, lm_head=False,
                                        mlm_transform=False))
    with pytest.raises(InferenceError, match="no token head"):
        score(headless, tokenizer, "the fox")


def test_a_text_with_nothing_to_score_is_an_error_not_nan(models, tokenizer, tmp_path):
    dec, enc = models["decoder"], models["encoder"]
    for model in (dec, enc):
        with pytest.raises(InferenceError, match="empty"):
            score(model, tokenizer, "")
    one = next(w for w in ("the", "a", "data") if len(tokenizer.encode(w)) == 1)
    with pytest.raises(InferenceError, match="first token is context only.*bos=True"):
        score(dec, tokenizer, one)
    assert score(dec, tokenizer, one, bos=True).num_tokens == 1  # after BOS it is scored
    f = tmp_path / "lines.txt"
    f.write_text(f"{TEXTS[0]}\n{one}\n")  # a one-token line adds nothing to a file's total, and is no error
    assert file_perplexity(dec, tokenizer, f).num_tokens == len(tokenizer.encode(TEXTS[0])) - 1


def test_which_models_score_the_first_token(models, tokenizer):
    from lmlab.infer.score import scores_first_token

    assert not scores_first_token(models["decoder"], tokenizer)
    assert scores_first_token(models["decoder"], tokenizer, bos=True)
    assert scores_first_token(models["decoder"], with_template(tokenizer, "<s> $A"))
    assert scores_first_token(models["encoder"], tokenizer) and scores_first_token(models["seq2seq"], tokenizer)


def test_the_seq2seq_error_names_the_command_line_option(models, tokenizer):
    with pytest.raises(InferenceError, match="--target"):
        score(models["seq2seq"], tokenizer, "the fox")


def _saved_decoder(models, tokenizer, tmp_path):
    """The tiny decoder saved as a checkpoint, tmp_path/dec, and TEXTS as a held-out file, tmp_path/held_out.txt."""
    from lmlab.train.checkpoint import save_model_dir

    path = tmp_path / "dec"
    path.mkdir()
    save_model_dir(path, models["decoder"], tokenizer)
    (tmp_path / "held_out.txt").write_text("\n".join(TEXTS) + "\n")
    return path


def test_bf16_weights_for_inference(models, tokenizer, tmp_path, capsys):
    """A model loaded to run only in bf16 (lmlab.load / the CLI's --dtype bf16) holds bfloat16 weights, scores a
    file within 1% of the float32 perplexity and generates; bf16 without for_inference is refused."""
    import json

    import lmlab
    from lmlab.cli import main
    from lmlab.errors import ConfigError
    from lmlab.train.checkpoint import load_model

    path = _saved_decoder(models, tokenizer, tmp_path)
    half, tok = lmlab.load(path, for_inference=True, dtype="bf16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    full, _ = lmlab.load(path, for_inference=True)
    ppl = {name: file_perplexity(m, tok.lmlab_tokenizer, tmp_path / "held_out.txt").perplexity
           for name, m in (("bf16", half), ("fp32", full))}
    assert ppl["bf16"] == pytest.approx(ppl["fp32"], rel=0.01)
    assert main(["generate", str(path), "the quick", "--temperature", "0", "--max-new-tokens", "5", "--dtype",
                 "bf16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    scorer = lmlab.pipeline("score", model=path, dtype="bf16")
    assert scorer.model.embed.weight.dtype == torch.bfloat16
    assert scorer(TEXTS[0])["log_prob"] == pytest.approx(score(full, tok.lmlab_tokenizer, TEXTS[0]).log_prob, rel=0.01)
    with pytest.raises(ConfigError, match="for_inference"):
        load_model(path, dtype="bf16")


def test_int8_weights_for_inference(models, tokenizer, tmp_path, capsys):
    """--quantize int8 (lmlab.load, pipelines, the CLI): int8 weight matrices, a file's perplexity within 2% of
    float32's, alone and with bf16 for the rest; the greedy tokens mostly float32's; refused for training;
    int8-dynamic within 2% too, and refused where fbgemm cannot run it."""
    import json

    import lmlab
    from lmlab.cli import main
    from lmlab.errors import ConfigError
    from lmlab.model.quant import FBGEMM
    from lmlab.train.checkpoint import load_model

    path = _saved_decoder(models, tokenizer, tmp_path)
    full, tok = lmlab.load(path, for_inference=True)
    ppl = file_perplexity(full, tok.lmlab_tokenizer, tmp_path / "held_out.txt").perplexity
    for dtype in ("fp32", "bf16"):
        quant, _ = lmlab.load(path, for_inference=True, dtype=dtype, quantize="int8")
        assert quant.head.proj.weight.dtype == torch.int8 and quant.head.proj.weight is quant.embed.weight
        assert file_perplexity(quant, tok.lmlab_tokenizer, tmp_path / "held_out.txt").perplexity == \
            pytest.approx(ppl, rel=0.02)
    ids = torch.tensor([tok.lmlab_tokenizer.encode(t) for t in TEXTS[:1]])
    a, b = (generate(m, ids, max_new_tokens=20)[0, ids.shape[1]:] for m in (full, quant))
    assert float((a == b).float().mean()) >= 0.5
    assert main(["generate", str(path), "the quick", "--temperature", "0", "--max-new-tokens", "5", "--quantize",
                 "int8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    scorer = lmlab.pipeline("score", model=path, quantize="int8")
    assert scorer.model.embed.weight.dtype == torch.int8
    assert scorer(TEXTS[0])["log_prob"] == pytest.approx(score(full, tok.lmlab_tokenizer, TEXTS[0]).log_prob, rel=0.02)
    with pytest.raises(ConfigError, match="for_inference"):
        load_model(path, quantize="int8")
    if FBGEMM:  # int8-dynamic: activations quantized too, the perplexity still within 2%
        dynamic, _ = lmlab.load(path, for_inference=True, quantize="int8-dynamic")
        assert dynamic.decoder.layers[0].mlp.up.packed is not None
        assert file_perplexity(dynamic, tok.lmlab_tokenizer, tmp_path / "held_out.txt").perplexity == \
            pytest.approx(ppl, rel=0.02)
        assert main(["score", str(path), "the quick", "--quantize", "int8-dynamic", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)
    with pytest.raises(ConfigError, match="x86 CPUs only"):  # where fbgemm is missing, or on another device
        load_model(path, for_inference=True, quantize="int8-dynamic", device="meta")
    with pytest.raises(SystemExit) as e:
        main(["generate", str(path), "the quick", "--quantize", "int4"])
    assert e.value.code == 2
