"""Tokenizers: train BPE, WordPiece or Unigram ones, load Hugging Face ones, know their special tokens.

Built on the Hugging Face ``tokenizers`` library. A :class:`Tokenizer` wraps a ``tokenizers.Tokenizer``
and records the *role* of each special token (pad, unk, bos, eos, cls, sep, mask) so that objectives
ask for ``tokenizer.mask_id`` rather than for a token string.

Special tokens of a trained tokenizer take the first ids, in this order:

=========  ========================================  ==========================================
id         BPE and Unigram                           WordPiece
=========  ========================================  ==========================================
0          ``<pad>``                                 ``[PAD]``
1          ``<unk>``                                 ``[UNK]``
2          ``<s>`` (bos, cls)                        ``[CLS]`` (bos, cls)
3          ``</s>`` (eos, sep)                       ``[SEP]`` (eos, sep)
4          ``[MASK]``                                ``[MASK]``
5..        ``<extra_id_0>``... (``sentinels=N``)     same
=========  ========================================  ==========================================

The mask token is the literal ``[MASK]`` for every kind, so ``"This is a [MASK] sentence."`` works
everywhere. For BPE and Unigram it absorbs the space before it (``lstrip``, as RoBERTa's ``<mask>``
does): the masked word is then predicted as the space-prefixed token it would be in running text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import tokenizers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, trainers

from lmlab.errors import CheckpointError, DataError, TokenizerError, make_output_dir

Kind = Literal["bpe", "wordpiece", "unigram"]
ROLES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")
MASK = "[MASK]"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"

_SPECIALS: dict[str, dict[str, str]] = {
    "bpe": dict(pad="<pad>", unk="<unk>", bos="<s>", eos="</s>", cls="<s>", sep="</s>", mask=MASK),
    "unigram": dict(pad="<pad>", unk="<unk>", bos="<s>", eos="</s>", cls="<s>", sep="</s>", mask=MASK),
    "wordpiece": dict(pad="[PAD]", unk="[UNK]", bos="[CLS]", eos="[SEP]", cls="[CLS]", sep="[SEP]",
                      mask=MASK),
}
# Used to infer roles of a tokenizer.json that comes without a tokenizer_config.json; first match wins.
_USUAL: dict[str, tuple[str, ...]] = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "bos": ("<s>", "[CLS]", "<bos>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"),
    "eos": ("</s>", "[SEP]", "<eos>", "<|end_of_text|>", "<|endoftext|>"),
    "cls": ("[CLS]", "<s>", "<cls>"),
    "sep": ("[SEP]", "</s>", "<sep>"),
    "mask": ("[MASK]", "<mask>"),
}
_BATCH_DOCS = 1000  # documents per batch handed to the trainer


def sentinel_token(i: int) -> str:
    """The T5-style sentinel token string number ``i``: ``<extra_id_{i}>``."""
    return f"<extra_id_{i}>"


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the roles of its special tokens.

    Build one with :func:`train_tokenizer` or :meth:`Tokenizer.load`. ``encode`` never adds special
    tokens (objectives decide where they go); padding and truncation of the wrapped tokenizer are off.
    """

    def __init__(self, tok: tokenizers.Tokenizer, roles: dict[str, str],
                 additional_special_tokens: Sequence[str] = (), chat_template: str | None = None) -> None:
        """Wrap ``tok``; ``roles`` maps role names (see ``ROLES``) to token strings present in ``tok``;
        ``chat_template`` is the Jinja template conversations are rendered with (:mod:`lmlab.chat_template`).

        Raises:
            TokenizerError: a role names a token that ``tok`` does not have.
        """
        tok.no_padding()
        tok.no_truncation()
        self.tok = tok
        self.roles = {r: t for r, t in roles.items() if r in ROLES and t is not None}
        self.additional_special_tokens = list(additional_special_tokens)
        self.chat_template = chat_template
        for role, token in self.roles.items():
            if tok.token_to_id(token) is None:
                raise TokenizerError(f"the {role} token {token!r} is not in the tokenizer's vocabulary")
        for token in self.additional_special_tokens:
            if tok.token_to_id(token) is None:
                raise TokenizerError(f"the special token {token!r} is not in the tokenizer's vocabulary")

    # ------------------------------------------------------------------ ids of the special tokens

    def _id(self, role: str) -> int | None:
        token = self.roles.get(role)
        return None if token is None else self.tok.token_to_id(token)

    @property
    def pad_id(self) -> int | None:
        return self._id("pad")

    @property
    def unk_id(self) -> int | None:
        return self._id("unk")

    @property
    def bos_id(self) -> int | None:
        return self._id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._id("eos")

    @property
    def cls_id(self) -> int | None:
        return self._id("cls")

    @property
    def sep_id(self) -> int | None:
        return self._id("sep")

    @property
    def mask_id(self) -> int | None:
        return self._id("mask")

    @property
    def sentinel_ids(self) -> list[int]:
        """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... in that order (empty if it has none)."""
        ids = []
        while (i := self.tok.token_to_id(sentinel_token(len(ids)))) is not None:
            ids.append(i)
        return ids

    @property
    def special_ids(self) -> list[int]:
        """Sorted ids of every special token (role tokens, sentinels and other added special tokens)."""
        ids = {i for r in ROLES if (i := self._id(r)) is not None}
        ids.update(self.tok.token_to_id(t) for t in self.additional_special_tokens)
        ids.update(i for i, t in self.tok.get_added_tokens_decoder().items() if t.special)
        return sorted(ids)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the model's embedding rows must be at least this)."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    # ------------------------------------------------------------------ encoding

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without any special token added (special strings in it still match)."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts, encoded in parallel by the library's Rust threads."""
        return [e.ids for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int] | Any, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, a 1-D tensor or array). Special tokens are dropped unless asked for."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_generated(self, ids: Iterable[int] | Any, keep_special_tokens: bool = False) -> str:
        """Text of generated ``ids``: the special tokens of the roles (pad, eos, ...) are dropped, but sentinels
        (``<extra_id_N>``) are kept, since a span-corruption model answers with them (``<extra_id_0> fox
        <extra_id_1> ...``) and would otherwise print nothing; ``keep_special_tokens`` keeps every one."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if not keep_special_tokens:
            drop = set(self.special_ids) - set(self.sentinel_ids)
            ids = [i for i in ids if i not in drop]
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token``, or None when it is not in the vocabulary."""
        return self.tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        """The token string of id ``i``, or None when out of range."""
        return self.tok.id_to_token(int(i))

    # ------------------------------------------------------------------ identity and files

    def to_json(self) -> str:
        """The tokenizer's ``tokenizer.json`` content."""
        return self.tok.to_str()

    def sha256(self) -> str:
        """A stable hash of the tokenizer's JSON serialization (keys sorted, so formatting does not count).

        Token shards record it, so data made with another tokenizer is refused.
        """
        canonical = json.dumps(json.loads(self.tok.to_str()), sort_keys=True, ensure_ascii=False,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def fingerprint(self) -> str:
        """Same as :meth:`sha256`."""
        return self.sha256()

    def config(self) -> dict[str, Any]:
        """The ``tokenizer_config.json`` content: Hugging Face style role -> token string keys."""
        cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        cfg.update({f"{r}_token": self.roles[r] for r in ROLES if r in self.roles})
        cfg["additional_special_tokens"] = list(self.additional_special_tokens)
        if self.chat_template is not None:
            cfg["chat_template"] = self.chat_template
        return cfg

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory``; return the directory.

        Raises:
            ConfigError: ``directory`` is a file; TokenizerError: it cannot be created or written.
        """
        d = make_output_dir(directory, "tokenizer directory", TokenizerError)
        self.tok.save(str(d / TOKENIZER_FILE))
        (d / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
        return d

    @classmethod
    def load(cls, path: str | Path, lowercase: bool = True) -> Tokenizer:
        """Load a tokenizer from a directory, a ``tokenizer.json``, a BERT ``vocab.txt`` or a GPT-2 ``vocab.json``.

        Args:
            path: a directory holding ``tokenizer.json`` (or else ``vocab.txt``, or else ``vocab.json`` and
                ``merges.txt``), or one of those files (a ``vocab.json`` needs ``merges.txt`` beside it; it
                makes a byte-level BPE as GPT-2 and RoBERTa use). Roles come from ``tokenizer_config.json`` /
                ``special_tokens_map.json`` beside it when present, otherwise from the usual token strings
                (``[MASK]``, ``<mask>``, ``</s>``...).
            lowercase: for a ``vocab.txt`` only, whether to lowercase and strip accents (bert-base-uncased
                style); a ``do_lower_case`` (and ``strip_accents``, ``tokenize_chinese_chars``) in a
                ``tokenizer_config.json`` beside it takes precedence.

        Raises:
            TokenizerError: the path is missing or the file cannot be read as a tokenizer.
        """
        p = Path(path)
        if p.is_dir():
            if (p / TOKENIZER_FILE).is_file():
                p = p / TOKENIZER_FILE
            elif (p / "vocab.txt").is_file():
                p = p / "vocab.txt"
            elif (p / "vocab.json").is_file():
                p = p / "vocab.json"
            else:
                raise TokenizerError(f"{p} holds neither {TOKENIZER_FILE}, vocab.txt nor vocab.json + merges.txt; "
                                     "train one with `lmlab tokenizer train` or point to the right directory")
        if not p.is_file():
            raise TokenizerError(f"tokenizer file {p} does not exist")
        meta = _read_meta(p.parent)
        if p.suffix == ".txt":
            lower = bool(meta.get("do_lower_case", lowercase))
            strip = meta.get("strip_accents")
            tok = _wordpiece_from_vocab(p, lower, lower if strip is None else bool(strip),
                                        bool(meta.get("tokenize_chinese_chars", True)))
        elif p.name == "vocab.json":
            tok = _bpe_from_vocab(p, meta)
        else:
            try:
                tok = tokenizers.Tokenizer.from_file(str(p))
            except Exception as e:  # the library raises plain Exceptions for malformed files
                raise TokenizerError(f"{p} is not a readable tokenizer.json ({e}); "
                                     "re-create or re-download it") from None
        roles = {r: _token_str(meta[f"{r}_token"]) for r in ROLES if meta.get(f"{r}_token")}
        vocab = tok.get_vocab(with_added_tokens=True)
        for role, usual in _USUAL.items():
            if role not in roles:
                roles[role] = next((t for t in usual if t in vocab), None)
        extra = [t for x in meta.get("additional_special_tokens", []) if (t := _token_str(x)) in vocab]
        return cls(tok, roles, extra, _chat_template(p.parent, meta))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, roles={self.roles})"


def check_model_vocab(tokenizer: Tokenizer | None, vocab_size: int, source: str | Path) -> None:
    """Refuse a tokenizer with ids the model has no embedding row for (a checkpoint whose ``tokenizer.json`` was
    replaced by a larger one, say), which would otherwise fail later as an ``IndexError`` inside the embedding.
    A model larger than its tokenizer is fine (rows padded for speed, as many Hugging Face models have).

    Raises:
        CheckpointError: ``tokenizer.vocab_size`` exceeds ``vocab_size``, naming both and ``source``.
    """
    if tokenizer is not None and tokenizer.vocab_size > vocab_size:
        raise CheckpointError(f"{source}: the tokenizer has {tokenizer.vocab_size} tokens but the model's embedding "
                              f"only {vocab_size} rows, so they do not belong together; put back the tokenizer.json "
                              "the model was trained with")


def _token_str(x: Any) -> str:
    return x["content"] if isinstance(x, dict) else str(x)  # HF configs store AddedToken dicts or strings


def _chat_template(directory: Path, meta: dict[str, Any]) -> str | None:
    """The chat template of a tokenizer directory: ``chat_template`` in ``tokenizer_config.json`` (a string, or
    Hugging Face's list of named templates, of which the one named ``default``), else a ``chat_template.jinja``
    file (where recent ``transformers`` versions save it)."""
    template = meta.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if isinstance(template, str):
        return template
    f = directory / "chat_template.jinja"
    return f.read_text(encoding="utf-8") if f.is_file() else None


def _read_meta(directory: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name in ("special_tokens_map.json", CONFIG_FILE):  # the latter wins
        f = directory / name
        if f.is_file():
            try:
                meta.update(json.loads(f.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TokenizerError(f"{f} is not valid JSON ({e}); fix or delete it") from None
    return meta


def _wordpiece_from_vocab(path: Path, lowercase: bool, strip_accents: bool | None = None,
                          chinese_chars: bool = True) -> tokenizers.Tokenizer:
    try:
        tokens = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path} is not a UTF-8 vocab.txt ({e})") from None
    vocab = {t: i for i, t in enumerate(tokens) if t}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", MASK]
    if not vocab or "[UNK]" not in vocab:
        raise TokenizerError(f"{path} is not a BERT vocab.txt: it has no [UNK] token")
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese_chars, lowercase=lowercase,
        strip_accents=lowercase if strip_accents is None else strip_accents)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials if t in vocab])
    return tok


def _bpe_from_vocab(path: Path, meta: dict[str, Any]) -> tokenizers.Tokenizer:
    """A byte-level BPE (GPT-2, RoBERTa, BART) from ``vocab.json`` and the ``merges.txt`` beside it.

    Special tokens are the role tokens (from ``meta``, else the first usual string found per role), the
    ``additional_special_tokens`` and the ``added_tokens_decoder`` entries of ``tokenizer_config.json`` (whose
    ``lstrip``/``rstrip`` flags are kept; without them no token strips spaces, as in transformers 5).
    """
    merges = path.with_name("merges.txt")
    if not merges.is_file():
        raise TokenizerError(f"{path} needs merges.txt beside it (a GPT-2 style BPE is vocab.json + merges.txt)")
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        tok = tokenizers.Tokenizer(models.BPE.from_file(str(path), str(merges)))
    except Exception as e:  # json errors, and plain Exceptions from the library for malformed files
        raise TokenizerError(f"{path} and {merges.name} are not a readable BPE vocabulary ({e})") from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(meta.get("add_prefix_space", False)))
    tok.decoder = decoders.ByteLevel()
    named = [_token_str(meta[f"{r}_token"]) for r in ROLES if meta.get(f"{r}_token")]
    named += [next((t for t in usual if t in vocab), "") for r, usual in _USUAL.items() if not meta.get(f"{r}_token")]
    named += [_token_str(t) for t in meta.get("additional_special_tokens", [])]
    flags = {x["content"]: x for x in (meta.get("added_tokens_decoder") or {}).values() if isinstance(x, dict)}
    tok.add_special_tokens([
        AddedToken(t, special=True, normalized=False, lstrip=bool(flags.get(t, {}).get("lstrip", False)),
                   rstrip=bool(flags.get(t, {}).get("rstrip", False)))
        for t in dict.fromkeys(named + list(flags)) if t in vocab])
    return tok


# --------------------------------------------------------------------------- training


def _is_path(x: Any) -> bool:
    if isinstance(x, Path):
        return True
    if not isinstance(x, str) or "\n" in x or len(x) > 4096:
        return False
    from lmlab.data.corpus import SUFFIXES

    # A string is read as a path when it names something that exists, or looks like a corpus file name
    # (then a missing file is an error instead of being silently trained on as text).
    return Path(x).exists() or x.lower().endswith(SUFFIXES)


def _batches(source: Iterable[str | Path] | str | Path, counter: list[int], text_field: str) -> Iterator[list[str]]:
    """Documents in batches; paths are read lazily with :func:`lmlab.data.corpus.read_documents`."""
    from lmlab.data.corpus import read_documents

    items: Iterable[str | Path] = [source] if isinstance(source, (str, Path)) and _is_path(source) else source
    batch: list[str] = []
    for item in items:
        if _is_path(item):
            try:
                docs: Iterable[str] = read_documents(item, text_field=text_field)
            except DataError as e:
                raise TokenizerError(f"cannot read training text: {e}") from None
        else:
            docs = [item]
        try:
            for doc in docs:
                batch.append(doc)
                counter[0] += len(doc)
                if len(batch) >= _BATCH_DOCS:
                    yield batch
                    batch = []
        except DataError as e:
            raise TokenizerError(f"cannot read training text: {e}") from None
    if batch:
        yield batch


def _build(kind: Kind, lowercase: bool) -> tokenizers.Tokenizer:
    if kind == "bpe":
        tok = tokenizers.Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
        # Byte level: every string is representable, so decode(encode(text)) == text (without lowercase).
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
    elif kind == "wordpiece":
        tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=lowercase, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
    elif kind == "unigram":
        tok = tokenizers.Tokenizer(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        # "first": only the text's start gets a "▁", not every piece after a special token.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose bpe, wordpiece or unigram")
    return tok


def train_tokenizer(files: Iterable[str | Path] | str | Path, kind: Kind = "bpe", vocab_size: int = 8192,
                    min_frequency: int = 2, sentinels: int = 0, lowercase: bool = False,
                    text_field: str = "text") -> Tokenizer:
    """Train a tokenizer on a corpus, streaming it through the library's ``train_from_iterator``.

    Args:
        files: corpus paths (``.txt``/``.md``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` files or directories,
            read as :func:`lmlab.data.read_documents` does) or an iterable of texts. A string is taken as a path
            when it names an existing file or directory or ends in one of those suffixes.
        kind: ``"bpe"`` (byte-level), ``"wordpiece"`` (BERT style) or ``"unigram"`` (SentencePiece style).
        vocab_size: the vocabulary size to reach, special tokens included.
        min_frequency: the least count of a pair (BPE) or word (WordPiece) to make a token of it.
        sentinels: add ``<extra_id_0>`` .. ``<extra_id_{N-1}>`` special tokens (T5 span corruption).
        lowercase: lowercase the text first (WordPiece also strips accents then).
        text_field: the field of a corpus row that holds its document (see :func:`lmlab.data.read_documents`).

    Returns:
        The trained :class:`Tokenizer`; special tokens have the first ids (see the module docstring).

    Raises:
        TokenizerError: unknown kind, bad sizes, a missing corpus path, or no training text at all.
    """
    if kind not in _SPECIALS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose bpe, wordpiece or unigram")
    if sentinels < 0 or min_frequency < 1:
        raise TokenizerError("sentinels must be >= 0 and min_frequency >= 1")
    roles = _SPECIALS[kind]
    names = list(dict.fromkeys(roles.values()))  # pad, unk, bos, eos, mask without repeats
    extra = [sentinel_token(i) for i in range(sentinels)]
    if vocab_size <= len(names) + sentinels:
        raise TokenizerError(f"vocab_size {vocab_size} leaves no room beyond the {len(names) + sentinels} "
                             "special tokens; choose a larger one")
    # The mask absorbs the space before it where spaces are part of tokens (see the module docstring).
    lstrip = kind != "wordpiece"
    specials = [AddedToken(t, special=True, normalized=False, lstrip=lstrip and t == MASK)
                for t in names + extra]
    tok = _build(kind, lowercase)
    if kind == "bpe":
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "wordpiece":
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            show_progress=False, special_tokens=specials,
                                            continuing_subword_prefix="##")
    else:
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=specials,
                                          unk_token=roles["unk"], max_piece_length=16)
    chars = [0]
    try:
        tok.train_from_iterator(_batches(files, chars, text_field), trainer=trainer)
    except TokenizerError:
        raise
    except Exception as e:  # the Rust side re-raises errors of the iterator as plain Exceptions
        if isinstance(e.__cause__, TokenizerError):
            raise e.__cause__ from None
        raise
    if chars[0] == 0:
        raise TokenizerError("no training text: the corpus is empty; give files or texts with text in them")
    return Tokenizer(tok, dict(roles), extra)
