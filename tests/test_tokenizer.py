"""Tests of lmlab.tokenizer: training each kind, special tokens, round trips, save/load, fingerprints."""

from __future__ import annotations

import json
import random

import pytest

from lmlab.errors import TokenizerError
from lmlab.tokenizer import Tokenizer, train_tokenizer

WORDS = ("the model reads a sentence and predicts the next token while the objective decides what is "
         "masked scored or corrupted during pretraining of small transformer language models on text "
         "café naïve résumé données 数据 模型 训练 def return import class self lambda").split()
VARIED = [
    "Héllo wörld, ça va? Ñandú — «quotes» and ‘curly’ ones…",
    "中文分词测试：这是一个句子。",
    "emoji 🎉🚀👩‍💻 and symbols ∑∫√ ≠ ≤",
    "def f(x):\n\treturn x ** 2  # two spaces  and a tab\n",
    "  leading and trailing spaces  ",
    "mixed\r\nnewlines\n\n\nand blank lines",
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + "." for _ in range(n)] + VARIED


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_tokenizer(corpus(), kind="bpe", vocab_size=600, sentinels=4)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_train_each_kind_specials_and_mask(kind):
    tok = train_tokenizer(corpus(), kind=kind, vocab_size=400, min_frequency=1)
    assert 50 < tok.vocab_size <= 400
    if kind == "wordpiece":
        expected = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        assert (tok.cls_id, tok.sep_id) == (tok.bos_id, tok.eos_id) == (2, 3)
    else:
        expected = ["<pad>", "<unk>", "<s>", "</s>", "[MASK]"]
        assert (tok.cls_id, tok.sep_id) == (tok.bos_id, tok.eos_id)
    assert [tok.id_to_token(i) for i in range(5)] == expected
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == [0, 1, 2, 3, 4]
    assert tok.sentinel_ids == []
    for text in ("This is a [MASK] sentence.", "a[MASK]b", "[MASK]"):
        ids = tok.encode(text)
        assert ids.count(tok.mask_id) == 1, (text, [tok.id_to_token(i) for i in ids])
    assert tok.encode("the model") and "model" in tok.decode(tok.encode("the model"))
    texts = ["the model", "a sentence"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_bpe_round_trip_varied_text(bpe):
    for text in VARIED + ["This is a plain sentence.", "unseen wörds ︎ \x00 \u200b"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_mask_absorbs_space_and_decodes(bpe):
    ids = bpe.encode("the [MASK] model")
    assert ids == bpe.encode("the") + [bpe.mask_id] + bpe.encode(" model")
    assert bpe.decode(ids) == "the model"  # the mask is skipped, and took its space with it
    assert "[MASK]" in bpe.decode(ids, skip_special_tokens=False)


def test_sentinels(bpe):
    assert bpe.sentinel_ids == [5, 6, 7, 8]
    assert [bpe.id_to_token(i) for i in bpe.sentinel_ids] == [f"<extra_id_{i}>" for i in range(4)]
    assert set(bpe.sentinel_ids) <= set(bpe.special_ids)
    assert bpe.encode("the<extra_id_2>model")[1] == 7


def test_encode_adds_no_specials(bpe):
    assert not set(bpe.encode("the model reads")) & set(bpe.special_ids)


def test_lowercase():
    tok = train_tokenizer(corpus(), kind="wordpiece", vocab_size=300, lowercase=True)
    assert tok.encode("THE Model") == tok.encode("the model")


def test_save_load_same_ids_and_fingerprint(tmp_path, bpe):
    bpe.save(tmp_path / "tok")
    cfg = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert cfg["mask_token"] == "[MASK]" and cfg["eos_token"] == "</s>" and cfg["sep_token"] == "</s>"
    assert cfg["additional_special_tokens"] == [f"<extra_id_{i}>" for i in range(4)]
    for path in (tmp_path / "tok", tmp_path / "tok" / "tokenizer.json"):
        loaded = Tokenizer.load(path)
        assert loaded.fingerprint == bpe.fingerprint == bpe.sha256()
        assert loaded.roles == bpe.roles and loaded.special_ids == bpe.special_ids
        for text in VARIED:
            assert loaded.encode(text) == bpe.encode(text)
    # Without tokenizer_config.json the roles are inferred from the usual strings.
    (tmp_path / "tok" / "tokenizer_config.json").unlink()
    bare = Tokenizer.load(tmp_path / "tok")
    assert (bare.pad_id, bare.unk_id, bare.bos_id, bare.eos_id, bare.mask_id) == (0, 1, 2, 3, 4)


def test_fingerprint_differs_between_tokenizers(bpe):
    other = train_tokenizer(corpus(seed=1), kind="bpe", vocab_size=600, sentinels=4)
    assert other.fingerprint != bpe.fingerprint
    assert train_tokenizer(corpus(), kind="bpe", vocab_size=600, sentinels=4).fingerprint == bpe.fingerprint


def test_train_from_files_and_directories(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(corpus(200)), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus(50, 2)))
    from_dir = train_tokenizer([tmp_path], vocab_size=400)
    from_files = train_tokenizer([str(tmp_path / "a.txt"), tmp_path / "sub" / "b.jsonl"], vocab_size=400)
    assert from_dir.fingerprint == from_files.fingerprint


def test_train_from_rows_in_another_text_field(tmp_path):
    """Rows of a .csv with the text in "body", as `lmlab tokenizer train --text-field body` reads them."""
    import csv

    from lmlab.cli import main

    (tmp_path / "rows").mkdir()
    with open(tmp_path / "rows" / "a.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "body"], *enumerate(corpus(200))])
    from_txt = train_tokenizer(corpus(200), vocab_size=400)
    assert train_tokenizer([tmp_path / "rows"], vocab_size=400, text_field="body").fingerprint == from_txt.fingerprint
    assert main(["tokenizer", "train", str(tmp_path / "rows"), "--out", str(tmp_path / "tok"), "--vocab-size", "400",
                 "--text-field", "body"]) == 0
    assert Tokenizer.load(tmp_path / "tok").fingerprint == from_txt.fingerprint
    with pytest.raises(TokenizerError, match=r"a\.csv:2: no string field \"text\""):
        train_tokenizer([tmp_path / "rows"], vocab_size=400)


def test_load_bert_vocab_txt(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "model", "##s", "read", ",", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    for path in (tmp_path, tmp_path / "vocab.txt"):
        tok = Tokenizer.load(path)
        assert tok.vocab_size == len(vocab)
        assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
        assert tok.encode("The Models read, [MASK].") == [5, 6, 7, 8, 9, 4, 10]
        assert tok.encode("unknownword") == [1]
        assert tok.decode([5, 6, 7, 8]) == "the models read"
    cased = Tokenizer.load(tmp_path / "vocab.txt", lowercase=False)
    assert cased.encode("The") == [1]


def test_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no training text"):
        train_tokenizer([], vocab_size=100)
    with pytest.raises(TokenizerError, match="does not exist"):
        train_tokenizer([tmp_path / "missing.txt"])
    with pytest.raises(TokenizerError, match="does not exist"):
        train_tokenizer(["missing.txt"])
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        train_tokenizer(corpus(), kind="sentencepiece")  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_tokenizer(corpus(), vocab_size=5)
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "nope.json")
    with pytest.raises(TokenizerError, match="neither"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a readable tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')
    with pytest.raises(TokenizerError, match="not a readable tokenizer.json"):
        Tokenizer.load(tmp_path / "tokenizer.json")


def test_a_tokenizer_larger_than_the_model_is_a_checkpoint_error(bpe):
    from lmlab.errors import CheckpointError
    from lmlab.tokenizer import check_model_vocab

    check_model_vocab(bpe, bpe.vocab_size, "ckpt")  # equal: fine
    check_model_vocab(bpe, bpe.vocab_size + 64, "ckpt")  # padded embedding rows: fine
    check_model_vocab(None, 10, "ckpt")  # a Hugging Face directory without tokenizer files
    with pytest.raises(CheckpointError, match=f"ckpt: the tokenizer has {bpe.vocab_size} tokens but the model"):
        check_model_vocab(bpe, bpe.vocab_size - 1, "ckpt")
