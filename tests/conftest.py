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
    prepare(corpus_file, tokenizer, out, val_fraction=0.05, progress=False)
    return out


@pytest.fixture(scope="session")
def sentinel_shards(tmp_path_factory, corpus_file, docs):
    """Shards made with a tokenizer that has 20 T5 sentinels (for span corruption and UL2)."""
    out = tmp_path_factory.mktemp("sentinel_shards")
    prepare(corpus_file, train_tokenizer(docs, kind="bpe", vocab_size=300, sentinels=20), out, val_fraction=0.05,
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
