"""lmlab.pipeline: fill-mask (parity with transformers on a BERT checkpoint), generation, seq2seq, score."""

from __future__ import annotations

import pytest
import torch

import lmlab
from lmlab.auto import AutoTokenizer, ModelKindError
from lmlab.infer import InferenceError, generate
from lmlab.infer.score import score_batch
from lmlab.tokenizer import train_tokenizer
from lmlab.train import save_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fill_mask_ranks_the_softmax_at_each_mask(models, tokenizer):
    enc = models["encoder"]
    fill = lmlab.pipeline("fill-mask", model=(enc, tokenizer), top_k=3)
    one, two = "the quick [MASK] fox", "the [MASK] fox jumps over the [MASK] dog"
    out_one, out_two = fill(one), fill(two)
    assert len(out_one) == 3 and len(out_two) == 2 and all(len(c) == 3 for c in out_two)
    assert fill([one, two]) == [out_one, out_two]
    assert len(fill(one, top_k=1)) == 1  # a call's options override the pipeline's defaults
    for text, per_mask in ((one, [out_one]), (two, out_two)):
        ids = tokenizer.encode(text)
        where = [j for j, t in enumerate(ids) if t == tokenizer.mask_id]
        probs = enc(torch.tensor([ids])).logits[0].softmax(-1)
        for j, candidates in zip(where, per_mask, strict=True):
            top = probs[j].topk(3)
            assert [c["score"] for c in candidates] == pytest.approx(top.values.tolist(), abs=1e-6)
            assert [c["token"] for c in candidates] == top.indices.tolist()
            for c in candidates:
                filled = list(ids)
                filled[j] = c["token"]
                assert c["token_str"] == tokenizer.decode([c["token"]], skip_special_tokens=False)
                assert c["sequence"] == tokenizer.decode(filled, skip_special_tokens=len(where) == 1)


def flat(x) -> list[dict]:
    """The candidate dicts of a fill-mask output, whatever its nesting (one or several masks and texts)."""
    return [x] if isinstance(x, dict) else [y for z in x for y in flat(z)]


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.txt"])
def test_fill_mask_matches_transformers_on_a_bert_checkpoint(tmp_path, docs, layout):
    """A Hugging Face BERT directory: [CLS] and [SEP] are added around the text, as transformers does."""
    import transformers

    wp = train_tokenizer(docs, kind="wordpiece", vocab_size=200, lowercase=True)
    (tmp_path / "vocab.txt").write_text("\n".join(wp.id_to_token(i) for i in range(wp.vocab_size)) + "\n")
    hf_tok = transformers.BertTokenizerFast.from_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(hf_tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, pad_token_id=hf_tok.pad_token_id)
    hf_model = transformers.BertForMaskedLM(cfg).eval()
    hf_model.save_pretrained(tmp_path)
    if layout == "tokenizer.json":
        hf_tok.save_pretrained(tmp_path)
    theirs = transformers.pipeline("fill-mask", model=hf_model, tokenizer=hf_tok)
    ours = lmlab.pipeline("fill-mask", model=tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("the quick [MASK] fox").input_ids == hf_tok(
        "the quick [MASK] fox")["input_ids"]
    for text in ["the quick [MASK] fox.", "a [MASK] model reads [MASK] data", ["[MASK] dog", "lazy [MASK]"]]:
        a, b = ours(text, top_k=4), theirs(text, top_k=4)
        a, b = flat(a), flat(b)
        assert [x["score"] for x in a] == pytest.approx([x["score"] for x in b], abs=1e-5)
        assert [(x["token"], x["token_str"], x["sequence"]) for x in a] == [
            (x["token"], x["token_str"], x["sequence"]) for x in b]


def test_text_generation_is_generate_decoded(models, tokenizer):
    dec = models["decoder"]
    gen = lmlab.pipeline("text-generation", model=(dec, tokenizer), max_new_tokens=6)
    prompts = ["the quick brown", "a"]
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        out = generate(dec, torch.tensor([ids]), max_new_tokens=6, eos_token_id=tokenizer.eos_id)[0, len(ids):]
        new = out.tolist()[:out.tolist().index(tokenizer.eos_id)] if tokenizer.eos_id in out else out.tolist()
        assert gen(prompt) == [{"generated_text": prompt + tokenizer.decode(new)}]
        assert gen(prompt, return_full_text=False) == [{"generated_text": tokenizer.decode(new)}]
    assert gen(prompts) == [gen(p) for p in prompts]  # left padding changes nothing
    sampled = gen(prompts, do_sample=True, num_return_sequences=3, seed=0)
    assert [len(s) for s in sampled] == [3, 3] and all(s["generated_text"].startswith("a") for s in sampled[1])
    assert sampled == gen(prompts, do_sample=True, num_return_sequences=3, seed=0)


@pytest.mark.parametrize("task, key", [("text2text-generation", "generated_text"),
                                       ("translation_en_to_de", "translation_text"),
                                       ("summarization", "summary_text")])
def test_seq2seq_tasks_decode_from_the_start_token(models, tokenizer, task, key):
    t5 = models["seq2seq"]
    pipe = lmlab.pipeline(task, model=(t5, tokenizer), max_new_tokens=5)
    texts = ["the quick brown fox", "a dog"]
    expected = []
    for text in texts:
        out = generate(t5, torch.tensor([tokenizer.encode(text)]), max_new_tokens=5, eos_token_id=tokenizer.eos_id,
                       pad_token_id=tokenizer.pad_id, decoder_start_token_id=tokenizer.pad_id)[0, 1:].tolist()
        expected.append(tokenizer.decode(out[:out.index(tokenizer.eos_id)] if tokenizer.eos_id in out else out))
    assert pipe(texts[0]) == [{key: expected[0]}]
    assert pipe(texts) == [{key: e} for e in expected]  # one output each: a flat list, as transformers
    beams = pipe(texts, num_beams=3, num_return_sequences=2)
    assert [len(b) for b in beams] == [2, 2] and all(key in x for b in beams for x in b)


def test_score_pipeline(models, tokenizer):
    for name in ("decoder", "encoder"):
        s = lmlab.pipeline("score", model=(models[name], tokenizer))
        texts = ["the quick brown fox", "a lazy dog."]
        got = s(texts)
        ref = score_batch(models[name], tokenizer, texts)
        for g, r in zip(got, ref, strict=True):
            assert (g["log_prob"], g["num_tokens"], g["perplexity"]) == (r.log_prob, r.num_tokens, r.perplexity)
            assert g["token_log_probs"] == r.token_log_probs
            assert g["tokens"] == [tokenizer.decode([i], skip_special_tokens=False) for i in r.token_ids]
        assert s(texts[0]) == got[0]
    s2s = lmlab.pipeline("score", model=(models["seq2seq"], tokenizer))
    one = s2s("the quick fox", target="a dog")
    assert one["num_tokens"] == len(tokenizer.encode("a dog")) + 1  # the target and EOS
    assert s2s(["the quick fox", "data"], target=["a dog", "text"])[0] == one
    with pytest.raises(InferenceError, match="one target"):
        s2s(["the quick fox"], target="a dog")


def test_wrong_kind_of_model_is_refused(models, tokenizer, tmp_path):
    paths = {name: tmp_path / name for name in models}
    for name, model in models.items():
        paths[name].mkdir()
        save_model_dir(paths[name], model, tokenizer)
    allowed = {"fill-mask": {"encoder"}, "text-generation": {"decoder"}, "text2text-generation": {"seq2seq"},
               "translation": {"seq2seq"}, "summarization": {"seq2seq"},
               "score": {"encoder", "decoder", "seq2seq"}}
    for task, ok in allowed.items():
        for name in models:
            for source in (paths[name], (models[name], tokenizer)):
                if name in ok:
                    pipe = lmlab.pipeline(task, model=source)
                    assert pipe.task == task
                    if source == paths[name] and pipe.model.decoder is not None:  # loaded to run only
                        assert pipe.model.decoder.layers[0].attn.o.decode_weight is not None
                else:
                    with pytest.raises(ModelKindError):
                        lmlab.pipeline(task, model=source)
    with pytest.raises(ModelKindError, match="encoder-decoder model"):
        lmlab.pipeline("translation", model=paths["decoder"])
    with pytest.raises(InferenceError, match="unknown task"):
        lmlab.pipeline("question-answering", model=paths["encoder"])
    with pytest.raises(InferenceError, match="no tokenizer"):
        lmlab.pipeline("fill-mask", model=models["encoder"])
    with pytest.raises(InferenceError, match="no mask token"):
        lmlab.pipeline("fill-mask", model=paths["encoder"])("no mask here")
