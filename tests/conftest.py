"""Shared fixtures: a small corpus, a tokenizer trained on it and shards prepared from it."""

from __future__ import annotations

import random

import pytest
import torch

from lmlab.data import prepare
from lmlab.tokenizer import train_tokenizer

WORDS = "the a model reads writes token text data small large quick brown fox jumps over lazy dog".split()


def make_docs(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) + "." for _ in range(n)]


@pytest.fixture(scope="session")
def docs() -> list[str]:
    return make_docs() + ["Ünïcödé 中文 🎉 in a document.", "def f(x):\n    return x"]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory, docs):
    f = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    f.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return f


@pytest.fixture(scope="session")
def tokenizer(docs):
    return train_tokenizer(docs, kind="bpe", vocab_size=300)


@pytest.fixture(scope="session")
def shards(tmp_path_factory, corpus_file, tokenizer):
    out = tmp_path_factory.mktemp("shards")
    prepare(corpus_file, tokenizer, out, valid_size=0.05, progress=False)
    return out


@pytest.fixture(scope="session")
def sentinel_shards(tmp_path_factory, corpus_file, docs):
    """Shards made with a tokenizer that has 20 T5 sentinels (for span corruption and UL2)."""
    out = tmp_path_factory.mktemp("sentinel_shards")
    prepare(corpus_file, train_tokenizer(docs, kind="bpe", vocab_size=300, sentinels=20), out, valid_size=0.05,
            progress=False)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy machine two threads can be 100 times slower. A module uses
    it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- fine-tuning examples

CLASS_WORDS = {"fruit": "apple banana cherry grape lemon mango".split(),
               "vehicle": "car bus train truck bike boat".split(),
               "colour": "red green blue yellow purple orange".split()}


def reversal_examples(n: int, seed: int) -> list[dict[str, str]]:
    """Reverse 3 to 5 digits: a deterministic text-to-text task a tiny model learns in seconds."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        d = [str(rng.randrange(10)) for _ in range(rng.randint(3, 5))]
        rows.append({"source": " ".join(d), "target": " ".join(reversed(d))})
    return rows


def class_examples(n: int, seed: int) -> list[dict[str, str]]:
    """Three classes of texts told apart by their words (with words of the other classes mixed in)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(CLASS_WORDS))
        words = [rng.choice(CLASS_WORDS[label]) for _ in range(rng.randint(3, 6))]
        words.insert(rng.randrange(len(words)), rng.choice(CLASS_WORDS[rng.choice(sorted(CLASS_WORDS))]))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def sft_examples(n: int, seed: int) -> list[dict]:
    """The reversal task as instructions: every other example a {"prompt", "completion"} pair, the others a
    conversation (a user turn and the assistant's answer)."""
    rows: list[dict] = []
    for i, r in enumerate(reversal_examples(n, seed)):
        rows.append({"prompt": r["source"], "completion": r["target"]} if i % 2 else
                    {"messages": [{"role": "user", "content": r["source"]},
                                  {"role": "assistant", "content": r["target"]}]})
    return rows


def preference_examples(n: int, seed: int) -> list[dict[str, str]]:
    """A preference a tiny model learns in seconds: the chosen answer reverses the prompt's digits, the rejected
    one is other digits of the same length."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        d = [str(rng.randrange(10)) for _ in range(rng.randint(3, 5))]
        rows.append({"prompt": " ".join(d), "chosen": " ".join(reversed(d)),
                     "rejected": " ".join(str(rng.randrange(10)) for _ in d)})
    return rows


def write_jsonl(path, rows) -> None:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_splits(directory, make, splits):
    """``directory/SPLIT.jsonl`` for each ``(split, n, seed)`` of ``splits``: ``make(n, seed)``'s rows."""
    for split, n, seed in splits:
        write_jsonl(directory / f"{split}.jsonl", make(n, seed))
    return directory


@pytest.fixture(scope="session")
def task_tokenizer(tmp_path_factory):
    """A WordPiece tokenizer whose tokens are the digits and the class words (with [CLS], [SEP], [PAD]...)."""
    words = [w for ws in CLASS_WORDS.values() for w in ws] + [str(i) for i in range(10)]
    tok = train_tokenizer([" ".join(words)] * 20, kind="wordpiece", vocab_size=120, min_frequency=1)
    return tok.save(tmp_path_factory.mktemp("task_tok"))


@pytest.fixture(scope="session")
def reversal_data(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("reversal"), reversal_examples,
                        (("train", 2000, 0), ("valid", 100, 1), ("test", 100, 2)))


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("sft"), sft_examples,
                        (("train", 2000, 0), ("valid", 100, 1)))


@pytest.fixture(scope="session")
def preference_data(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("preferences"), preference_examples,
                        (("train", 400, 0), ("valid", 100, 1), ("test", 40, 2)))


@pytest.fixture(scope="session")
def class_data(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("classes"), class_examples,
                        (("train", 600, 0), ("valid", 90, 1), ("test", 90, 2)))
