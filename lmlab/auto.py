"""A Hugging Face–style front door: ``lmlab.load``, ``AutoTokenizer`` and ``AutoModelFor*``.

Code written for ``transformers`` runs on an lmlab checkpoint with the import changed::

    from lmlab import AutoTokenizer, AutoModelForMaskedLM

    tok = AutoTokenizer.from_pretrained("runs/mlm")
    model = AutoModelForMaskedLM.from_pretrained("runs/mlm")
    inputs = tok("The cat sat on the [MASK].", return_tensors="pt")
    logits = model(**inputs).logits                                      # (1, T, V)
    where = (inputs.input_ids == tok.mask_token_id).nonzero()[0, 1]
    print(tok.decode(logits[0, where].argmax()))

The models are lmlab :class:`~lmlab.model.Transformer` instances in eval mode: ``model(input_ids,
attention_mask=...)`` returns an output with ``.logits``; the model never computes a loss (there is no
``labels=``). Generation is a function, not a method: ``lmlab.generate(model, **inputs, max_new_tokens=20)``
with a tokenizer whose ``padding_side`` is ``"left"`` for batched decoder prompts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lmlab.errors import TokenizerError
from lmlab.infer import InferenceError
from lmlab.tokenizer import CONFIG_FILE, ROLES, TOKENIZER_FILE, Tokenizer

__all__ = ["AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM",
           "AutoModelForSequenceClassification", "AutoTokenizer", "BatchEncoding", "ModelKindError", "load",
           "load_for_task"]


class ModelKindError(InferenceError):
    """A checkpoint of the wrong kind for what was asked (fill-mask on a causal decoder, translation on an
    encoder, ...)."""


def load(path: str | Path, device: str | torch.device = "cpu", for_inference: bool = False,
         dtype: str = "fp32", quantize: str | None = None,
         rows: int = 1) -> tuple[torch.nn.Module, AutoTokenizer | None]:
    """Load ``(model, tokenizer)`` from a checkpoint directory, the newest checkpoint of a run directory, or a
    Hugging Face model directory.

    The model is an lmlab ``Transformer`` in eval mode on ``device``, built as it was saved (see
    :class:`AutoModelForMaskedLM` and friends for a model checked and set up for a task); the tokenizer is the
    callable :class:`AutoTokenizer` that :meth:`AutoTokenizer.from_pretrained` gives (``tok(["a", "b"],
    padding=True)``), or None for a Hugging Face directory without tokenizer files. Every lmlab function takes
    it where it takes a tokenizer (``tokenizer.lmlab_tokenizer`` is the lmlab ``Tokenizer`` inside).
    ``for_inference=True`` readies the model to run only, for good (:meth:`lmlab.model.Transformer.for_inference`:
    no gradients, the decoding weight layout made once, each weight held once), with ``dtype="bf16"`` in
    bfloat16 and ``quantize="int8"`` (or ``"int8-dynamic"``) with int8 weight matrices (:mod:`lmlab.model.quant`),
    laid out for decoding steps of ``rows`` rows (batch x beams: 1 for one text at a time; 4 or more take oneDNN's
    packed float32 weights); the CLI's commands and the pipelines load models that way.

    Raises:
        CheckpointError: the directory is missing, incomplete or corrupt.
    """
    from lmlab.train.checkpoint import resolve_model_dir

    model, tok = _load(path, device, for_inference, dtype, quantize, rows)
    if tok is None:
        return model, None
    context = model.config.max_seq_len if model.config.position == "learned" else None
    return model, AutoTokenizer(tok, **_tokenizer_options(resolve_model_dir(path), context))


def _load(path: str | Path, device: str | torch.device = "cpu", for_inference: bool = False, dtype: str = "fp32",
          quantize: str | None = None, rows: int = 1):
    """``(model, lmlab Tokenizer)``: :func:`lmlab.train.load_model`, for lmlab's own code; the model knows the
    tokenizer's ids that generation defaults to (:func:`lmlab.infer.generate.generation_ids`)."""
    from lmlab.infer.generate import set_generation_ids
    from lmlab.train.checkpoint import load_model

    model, tok = load_model(path, device, for_inference=for_inference, dtype=dtype, quantize=quantize, rows=rows)
    if tok is not None:
        set_generation_ids(model, tok)
    return model, tok


# --------------------------------------------------------------------------- tokenizer


class BatchEncoding(dict):
    """What :class:`AutoTokenizer` returns: a dict of ``input_ids`` and ``attention_mask`` (lists, or long
    tensors with ``return_tensors="pt"``) that also answers attribute access (``enc.input_ids``), so
    ``model(**enc)`` and ``lmlab.generate(model, **enc)`` work."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> BatchEncoding:
        """Move every tensor to ``device`` (in place); returns ``self``."""
        for k, v in self.items():
            if isinstance(v, Tensor):
                self[k] = v.to(device)
        return self


def _as_ids(ids: Any) -> list[int]:
    """A list of ints from an int, a list, or a 0-D/1-D tensor or array."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


def _role_property(role: str, doc: str) -> property:
    def get(self: AutoTokenizer) -> str | None:
        return self.lmlab_tokenizer.roles.get(role)

    def set_(self: AutoTokenizer, token: str | None) -> None:
        if token is not None and self.backend_tokenizer.token_to_id(token) is None:
            raise TokenizerError(f"cannot make {token!r} the {role} token: it is not in the vocabulary")
        if token is None:
            self.lmlab_tokenizer.roles.pop(role, None)
        else:
            self.lmlab_tokenizer.roles[role] = token

    return property(get, set_, doc=doc)


def _role_id_property(role: str) -> property:
    return property(lambda self: self.lmlab_tokenizer._id(role), doc=f"The id of the {role} token, or None.")


class AutoTokenizer:
    """A Hugging Face–style tokenizer around lmlab's :class:`~lmlab.tokenizer.Tokenizer`.

    Build it with :meth:`from_pretrained` (a checkpoint, a run directory, a tokenizer directory or file) or
    directly from a ``Tokenizer``. Special tokens ([CLS], [SEP], BOS...) are added only where the wrapped
    ``tokenizers.Tokenizer`` has a post-processor that adds them (a BERT or Llama ``tokenizer.json``);
    tokenizers that lmlab trains have none, as lmlab models are trained on packed text without them.

    Attributes:
        lmlab_tokenizer: the wrapped lmlab ``Tokenizer`` (pass it to lmlab functions, or pass this object).
        backend_tokenizer: the ``tokenizers.Tokenizer`` inside.
        padding_side: ``"right"`` (default) or ``"left"`` (batched prompts for decoder generation).
        truncation_side: ``"right"`` (default) or ``"left"``.
        model_max_length: the default ``max_length`` for truncation and ``padding="max_length"`` (from
            ``tokenizer_config.json``, else the checkpoint's ``max_seq_len``), or None.
    """

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, tokenizer: Tokenizer, *, padding_side: Literal["right", "left"] = "right",
                 truncation_side: Literal["right", "left"] = "right", model_max_length: int | None = None) -> None:
        if padding_side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise TokenizerError("padding_side and truncation_side must be 'right' or 'left'")
        self.lmlab_tokenizer = tokenizer
        self.backend_tokenizer = tokenizer.tok
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.model_max_length = model_max_length

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> AutoTokenizer:
        """Load the tokenizer of a checkpoint directory, of the newest checkpoint of a run directory, of a
        Hugging Face model directory (as :func:`load` imports it: special tokens completed from its config.json,
        BERT/RoBERTa templates added), or of a tokenizer directory / ``tokenizer.json`` / ``vocab.txt`` /
        ``vocab.json``.

        ``model_max_length`` comes from ``tokenizer_config.json``, else from the model's learned positions.
        ``kwargs`` (``padding_side``, ``truncation_side``, ``model_max_length``) override both.

        Raises:
            TokenizerError: nothing there can be read as a tokenizer.
            CheckpointError, InteropError: a Hugging Face model directory that cannot be imported.
        """
        from lmlab.train.checkpoint import CONFIG, list_checkpoints

        p = Path(path)
        if not p.exists():
            raise TokenizerError(f"{p} does not exist; give a checkpoint, run or tokenizer directory")
        if p.is_dir() and not (p / CONFIG).is_file() and not (p / TOKENIZER_FILE).is_file() \
                and (found := list_checkpoints(p)):
            p = found[-1]  # a run directory: its newest checkpoint
        directory = p if p.is_dir() else p.parent
        cfg = _read_json(directory / CONFIG) if p.is_dir() else {}
        context = None
        if cfg.get("model_type") not in (None, "", "lmlab"):
            # A Hugging Face directory: the importer knows its special tokens (this reads the weights too).
            model, tok = _load(p)
            if tok is None:
                raise TokenizerError(f"{p} has no tokenizer files (tokenizer.json, vocab.txt or vocab.json)")
            if model.config.position == "learned":
                context = model.config.max_seq_len
        else:
            tok = Tokenizer.load(p)
            if cfg.get("model_type") == "lmlab" and cfg.get("position") == "learned":
                context = cfg.get("max_seq_len")
        return cls(tok, **{**_tokenizer_options(directory, context), **kwargs})

    # ------------------------------------------------------------------ special tokens

    mask_token = _role_property("mask", "The mask token string ([MASK] for lmlab tokenizers), or None.")
    pad_token = _role_property("pad", "The padding token string, or None; settable (``tok.pad_token = "
                                      "tok.eos_token``).")
    eos_token = _role_property("eos", "The end-of-sequence token string, or None.")
    bos_token = _role_property("bos", "The beginning-of-sequence token string, or None.")
    cls_token = _role_property("cls", "The classifier token string, or None.")
    sep_token = _role_property("sep", "The separator token string, or None.")
    unk_token = _role_property("unk", "The unknown token string, or None.")
    mask_token_id = _role_id_property("mask")
    pad_token_id = _role_id_property("pad")
    eos_token_id = _role_id_property("eos")
    bos_token_id = _role_id_property("bos")
    cls_token_id = _role_id_property("cls")
    sep_token_id = _role_id_property("sep")
    unk_token_id = _role_id_property("unk")

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of every special token (roles, sentinels, other added special tokens), sorted."""
        return self.lmlab_tokenizer.special_ids

    @property
    def all_special_tokens(self) -> list[str]:
        return [self.backend_tokenizer.id_to_token(i) for i in self.all_special_ids]

    @property
    def vocab_size(self) -> int:
        """The size of the base vocabulary, without added tokens (as in ``transformers``; ``len()`` counts
        them)."""
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    # ------------------------------------------------------------------ encoding

    def num_special_tokens_to_add(self) -> int:
        """How many special tokens the post-processor adds to one text (0 for lmlab tokenizers)."""
        return self.backend_tokenizer.num_special_tokens_to_add(False)

    def _encode_one(self, text: str, add_special_tokens: bool, max_length: int | None):
        """A ``tokenizers.Encoding``; truncated to ``max_length`` tokens, special tokens included, if given."""
        if not isinstance(text, str):
            raise TokenizerError(f"expected a string to encode, got {type(text).__name__}")
        enc = self.backend_tokenizer.encode(text, add_special_tokens=False)
        if max_length is not None:
            room = max_length - (self.num_special_tokens_to_add() if add_special_tokens else 0)
            if room < 0:
                raise TokenizerError(f"max_length {max_length} leaves no room for the special tokens")
            enc.truncate(room, direction=self.truncation_side)
        return self.backend_tokenizer.post_process(enc, None, add_special_tokens)

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        """The token strings of ``text``."""
        return self._encode_one(text, add_special_tokens, None).tokens

    def encode(self, text: str, add_special_tokens: bool = True, truncation: bool = False,
               max_length: int | None = None, return_tensors: Literal["pt"] | None = None) -> list[int] | Tensor:
        """Token ids of one text: a list, or a (1, T) long tensor with ``return_tensors="pt"``.

        Raises:
            TokenizerError: ``text`` is not a string; truncation without a length.
        """
        ids = self._encode_one(text, add_special_tokens, self._max_length(truncation, max_length)).ids
        return torch.tensor([ids], dtype=torch.long) if return_tensors == "pt" else ids

    def _max_length(self, truncation: bool, max_length: int | None) -> int | None:
        if truncation is False or truncation == "do_not_truncate":
            return None
        length = max_length if max_length is not None else self.model_max_length
        if length is None:
            raise TokenizerError("truncation needs max_length: this tokenizer has no model_max_length")
        return int(length)

    def __call__(self, text: str | Sequence[str], padding: bool | Literal["longest", "max_length",
                 "do_not_pad"] = False, truncation: bool = False, max_length: int | None = None,
                 return_tensors: Literal["pt"] | None = None, add_special_tokens: bool = True,
                 return_token_type_ids: bool = False) -> BatchEncoding:
        """Encode one text or a batch into ``input_ids`` and ``attention_mask``.

        Args:
            text: a string (lists of ids, or a (1, T) tensor) or a list of strings ((B, T)).
            padding: ``False``/``"do_not_pad"``; ``True``/``"longest"`` pads to the longest text;
                ``"max_length"`` pads to ``max_length`` (or ``model_max_length``). Padding goes on
                ``padding_side`` with the pad token, and has 0 in the attention mask.
            truncation: cut each text to ``max_length`` tokens (special tokens included), on ``truncation_side``.
            max_length: the length for truncation and ``padding="max_length"``.
            return_tensors: ``"pt"`` for long tensors, None for lists.
            add_special_tokens: apply the tokenizer's post-processor template, if it has one.
            return_token_type_ids: also return ``token_type_ids`` (only models with token-type embeddings
                accept them).

        Returns:
            A :class:`BatchEncoding`.

        Raises:
            TokenizerError: padding without a pad token; ``return_tensors="pt"`` on texts of different
                lengths without padding; truncation or ``"max_length"`` padding without a length.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if return_tensors not in (None, "pt"):
            raise TokenizerError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        limit = self._max_length(truncation, max_length)
        encs = [self._encode_one(t, add_special_tokens, limit) for t in texts]
        ids = [e.ids for e in encs]
        types = [e.type_ids for e in encs]
        masks = [[1] * len(e) for e in ids]
        if padding is True or padding in ("longest", "max_length"):
            if padding == "max_length":
                target = max_length if max_length is not None else self.model_max_length
                if target is None:
                    raise TokenizerError("padding='max_length' needs max_length: this tokenizer has no "
                                         "model_max_length")
            else:
                target = max((len(e) for e in ids), default=0)
            pad = self.pad_token_id
            if pad is None and any(len(e) < target for e in ids):
                raise TokenizerError("this tokenizer has no pad token to pad with; set one, e.g. "
                                     "`tokenizer.pad_token = tokenizer.eos_token`")
            ids = [self._pad(e, target, pad) for e in ids]
            types = [self._pad(e, target, 0) for e in types]
            masks = [self._pad(e, target, 0) for e in masks]
        elif padding not in (False, "do_not_pad"):
            raise TokenizerError(f"padding must be False, True, 'longest', 'max_length' or 'do_not_pad', "
                                 f"got {padding!r}")
        out = {"input_ids": ids, "attention_mask": masks}
        if return_token_type_ids:
            out["token_type_ids"] = types
        if return_tensors == "pt":
            if len({len(e) for e in ids}) > 1:
                raise TokenizerError("the texts have different lengths: pass padding=True to make a tensor")
            out = {k: torch.tensor(v, dtype=torch.long).reshape(len(texts), -1) for k, v in out.items()}
        elif single:
            out = {k: v[0] for k, v in out.items()}
        return BatchEncoding(out)

    def _pad(self, row: list[int], length: int, value: int | None) -> list[int]:
        fill = [value] * max(0, length - len(row))
        return fill + row if self.padding_side == "left" else row + fill

    # ------------------------------------------------------------------ chat

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template kept with the tokenizer (``tokenizer_config.json``), or None; settable."""
        return self.lmlab_tokenizer.chat_template

    @chat_template.setter
    def chat_template(self, template: str | None) -> None:
        self.lmlab_tokenizer.chat_template = template

    def apply_chat_template(self, conversation: list[dict[str, str]] | list[list[dict[str, str]]],
                            chat_template: str | None = None, add_generation_prompt: bool = False,
                            tokenize: bool = True, return_tensors: Literal["pt"] | None = None,
                            return_dict: bool = True, **kwargs: Any) -> Any:
        """A conversation (``[{"role", "content"}, ...]``, or a list of them) through the chat template, as in
        ``transformers``: the text (``tokenize=False``), else its ids encoded without added special tokens, as a
        :class:`BatchEncoding` (``return_dict``, the default of ``transformers`` 5) or a list.

        Args:
            chat_template: a template to use instead of the tokenizer's.
            add_generation_prompt: end with what starts an assistant turn (``<|im_start|>assistant\\n``).
            kwargs: more variables for the template; the special token strings (``eos_token``...) are given.

        Raises:
            TokenizerError: no template, or one that does not render the conversation.
        """
        from lmlab.chat_template import render, template_variables

        template = chat_template or self.chat_template
        if template is None:
            raise TokenizerError("this tokenizer has no chat template; pass chat_template=, or fine-tune with the "
                                 "sft objective, which keeps one with the run's tokenizer")
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        variables = {**template_variables(self.lmlab_tokenizer), **kwargs}
        texts = [render(template, list(c), add_generation_prompt, **variables)
                 for c in (conversation if batched else [conversation])]
        if not tokenize:
            return texts if batched else texts[0]
        out = self(texts if batched else texts[0], add_special_tokens=False, return_tensors=return_tensors,
                   padding=bool(return_tensors) and batched)
        return out if return_dict else out["input_ids"]

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """The text of ``ids``: an int, a list, or a 0-D/1-D tensor. Special tokens are kept unless asked."""
        return self.backend_tokenizer.decode(_as_ids(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Iterable[Any], skip_special_tokens: bool = False) -> list[str]:
        """The texts of a (B, T) tensor or a list of id lists."""
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    def convert_ids_to_tokens(self, ids: int | Any) -> str | None | list[str | None]:
        """Token string(s) of an id or of a list/tensor of ids (None for an id out of range)."""
        if isinstance(ids, int) or (isinstance(ids, Tensor) and ids.dim() == 0):
            return self.backend_tokenizer.id_to_token(int(ids))
        return [self.backend_tokenizer.id_to_token(i) for i in _as_ids(ids)]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Id(s) of token string(s); an unknown token gives the unk id (None when there is no unk token)."""
        def one(t: str) -> int | None:
            i = self.backend_tokenizer.token_to_id(t)
            return i if i is not None else self.unk_token_id

        return one(tokens) if isinstance(tokens, str) else [one(t) for t in tokens]

    # ------------------------------------------------------------------ files

    def save_pretrained(self, directory: str | Path) -> tuple[str, ...]:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (with ``padding_side``,
        ``truncation_side`` and ``model_max_length``) into ``directory``; return the paths written."""
        d = self.lmlab_tokenizer.save(directory)
        cfg_file = d / CONFIG_FILE
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        cfg.update(padding_side=self.padding_side, truncation_side=self.truncation_side)
        if self.model_max_length is not None:
            cfg["model_max_length"] = self.model_max_length
        cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return str(d / TOKENIZER_FILE), str(cfg_file)

    def __repr__(self) -> str:
        roles = {r: t for r, t in self.lmlab_tokenizer.roles.items() if r in ROLES}
        return (f"AutoTokenizer(vocab_size={len(self)}, padding_side={self.padding_side!r}, "
                f"model_max_length={self.model_max_length}, special={roles})")


def _tokenizer_options(directory: Path, context: int | None) -> dict[str, Any]:
    """``padding_side``, ``truncation_side`` and ``model_max_length`` from ``directory/tokenizer_config.json``; the
    model's learned context when it names no length."""
    options: dict[str, Any] = {"model_max_length": context}
    meta = _read_json(directory / CONFIG_FILE)
    options.update({k: meta[k] for k in ("padding_side", "truncation_side", "model_max_length") if k in meta})
    if not isinstance(options["model_max_length"], int) or options["model_max_length"] > 10**9:
        options["model_max_length"] = context  # transformers writes a huge number for "no limit"
    return options


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path} is not valid JSON ({e}); fix or delete it") from None
    return data if isinstance(data, dict) else {}


def as_auto_tokenizer(tokenizer: Any, **options: Any) -> AutoTokenizer:
    """An :class:`AutoTokenizer` around an lmlab ``Tokenizer`` (an ``AutoTokenizer`` is returned as it is)."""
    return tokenizer if isinstance(tokenizer, AutoTokenizer) else AutoTokenizer(tokenizer, **options)


# --------------------------------------------------------------------------- models

# Objectives after which a decoder attends both ways (they call the model with causal=False).
_BIDIRECTIONAL_OBJECTIVES = ("mlm",)


def trained_objective_config(path: str | Path) -> dict[str, Any]:
    """The ``objective`` section of the configuration a checkpoint was trained with (its ``training_state.json``),
    or ``{}`` when unknown (a model exported without training state, or imported from Hugging Face)."""
    from lmlab.train.checkpoint import STATE, read_json, resolve_model_dir

    state_file = resolve_model_dir(path) / STATE
    state = read_json(state_file) if state_file.is_file() else {}
    objective = state.get("config", {}).get("objective", {}) if isinstance(state.get("config"), dict) else {}
    return objective if isinstance(objective, dict) else {}


def trained_objective(path: str | Path) -> str | None:
    """The objective a checkpoint was trained with, or None when unknown (see :func:`trained_objective_config`)."""
    name = trained_objective_config(path).get("name")
    return name if isinstance(name, str) else None


def is_bidirectional(model: torch.nn.Module) -> bool:
    """Whether the model's token stack attends both ways by default (an encoder, or a decoder made
    bidirectional for masked LM by :func:`load_for_task`)."""
    if model.arch == "encoder":
        return True
    return model.arch == "decoder" and not model.decoder.causal


Task = Literal["any", "masked-lm", "causal-lm", "seq2seq-lm", "sequence-classification"]


def load_for_task(path: str | Path, task: Task, device: str | torch.device = "cpu",
                  for_inference: bool = False, dtype: str = "fp32", quantize: str | None = None):
    """Load ``(model, tokenizer)`` and check the model fits ``task``.

    A decoder trained with masked LM (its ``training_state.json`` says so) is returned with its stack set
    to attend both ways, so ``model(ids)`` runs it as it was trained; it is refused for ``"causal-lm"``.

    Args:
        task: ``"masked-lm"`` (an encoder, or a decoder trained with masked LM), ``"causal-lm"`` (a decoder),
            ``"seq2seq-lm"`` (an encoder-decoder), ``"sequence-classification"`` (a model with a classifier)
            or ``"any"``.

    Raises:
        CheckpointError: the checkpoint is missing, incomplete or corrupt.
        ModelKindError: the model is of another kind, or has no token head or classifier where one is needed.
    """
    model, tokenizer = _load(path, device, for_inference, dtype, quantize)
    if model.arch == "decoder" and trained_objective(path) in _BIDIRECTIONAL_OBJECTIVES:
        model.decoder.causal = False
    check_model_kind(model, task, source=str(path))
    return model, tokenizer


def check_model_kind(model: torch.nn.Module, task: Task, source: str = "the model") -> None:
    """Raise :class:`ModelKindError` when ``model`` cannot serve ``task`` (see :func:`load_for_task`)."""
    arch = model.arch
    a_arch = {"encoder": "an encoder", "decoder": "a decoder", "encoder-decoder": "an encoder-decoder"}[arch]
    if task == "masked-lm" and not is_bidirectional(model):
        hint = {"decoder": "a causal decoder (trained with causal LM); use AutoModelForCausalLM or the "
                           "text-generation pipeline (on the command line: `lmlab generate`)",
                "encoder-decoder": "an encoder-decoder; use AutoModelForSeq2SeqLM or the text2text-generation "
                                   "pipeline (on the command line: `lmlab generate`)"}[arch]
        raise ModelKindError(f"{source} is {hint}. Masked-LM (fill-mask) needs an encoder, or a decoder "
                             "trained with the mlm objective")
    if task == "causal-lm" and (arch != "decoder" or is_bidirectional(model)):
        what = "a decoder trained with masked LM" if arch == "decoder" else a_arch
        raise ModelKindError(f"{source} is {what}; causal LM (text generation) needs a decoder trained with "
                             "causal LM. Use AutoModelForMaskedLM / the fill-mask pipeline for masked-LM models, "
                             "AutoModelForSeq2SeqLM for encoder-decoders")
    if task == "seq2seq-lm" and arch != "encoder-decoder":
        raise ModelKindError(f"{source} is {a_arch}; sequence-to-sequence (translation, summarization) needs "
                             "an encoder-decoder model. Use the text-generation pipeline for a decoder")
    if task == "sequence-classification":
        if model.classifier is None:
            raise ModelKindError(f"{source} has no classifier (model.num_labels is 0): it is {a_arch} without a "
                                 "sequence-classification layer. Fine-tune it with model.num_labels > 0, or load it "
                                 "with AutoModel")
        return
    if task != "any" and model.head is None:
        raise ModelKindError(f"{source} has no token head (model.lm_head is false): it gives hidden states "
                             "only; load it with AutoModel")


class _AutoModelBase:
    _task: Task = "any"

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The lmlab ``Transformer`` of a checkpoint (or of the newest checkpoint of a run), in eval mode.

        Raises:
            CheckpointError: the checkpoint is missing, incomplete or corrupt.
            ModelKindError: the model is not of the kind this class loads.
        """
        return load_for_task(path, cls._task, device)[0]


class AutoModel(_AutoModelBase):
    """Any lmlab model as a base model, without its token head, as ``transformers``' ``AutoModel`` loads one:
    ``model(**inputs).last_hidden_state`` (also ``model(**inputs)[0]``, as sentence-embedding code reads it) and
    ``output_hidden_states=True`` for every layer's."""

    _task = "any"

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The lmlab ``Transformer`` of a checkpoint, in eval mode, with no token head (``logits`` is None).

        Raises:
            CheckpointError: the checkpoint is missing, incomplete or corrupt.
        """
        model = super().from_pretrained(path, device)
        model.head = None
        return model


class AutoModelForMaskedLM(_AutoModelBase):
    """An encoder, or a decoder trained with masked LM (returned attending both ways); ``model(**inputs).logits``
    scores every position."""

    _task = "masked-lm"


class AutoModelForCausalLM(_AutoModelBase):
    """A decoder trained with causal LM. Generate with ``lmlab.generate(model, **inputs, max_new_tokens=...)``."""

    _task = "causal-lm"


class AutoModelForSeq2SeqLM(_AutoModelBase):
    """An encoder-decoder. ``model(input_ids, attention_mask=..., decoder_input_ids=...).logits``; generate with
    ``lmlab.generate(model, **inputs)``."""

    _task = "seq2seq-lm"


class AutoModelForSequenceClassification(_AutoModelBase):
    """A model with a sequence classifier (``model.num_labels > 0``): an encoder classifies its first token, a
    decoder its last real token. There is no ``model(**inputs).logits`` of classes; classify hidden states::

        model = AutoModelForSequenceClassification.from_pretrained(path)
        inputs = tok(texts, padding=True, return_tensors="pt")
        h = model.hidden(inputs.input_ids, attention_mask=inputs.attention_mask)
        logits = model.classify(h, attention_mask=inputs.attention_mask)      # (B, num_labels)
        print([model.id2label[i] for i in logits.argmax(-1)])

    ``model.config.num_labels`` is the number of classes; ``model.id2label`` their names: those saved with the
    checkpoint, else ``LABEL_0``, ``LABEL_1``, ... as in ``transformers``.
    """

    _task = "sequence-classification"

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The lmlab ``Transformer`` of a checkpoint, in eval mode, with ``id2label`` set.

        Raises:
            CheckpointError: the checkpoint is missing, incomplete or corrupt.
            ModelKindError: the model has no classifier.
        """
        model = super().from_pretrained(path, device)
        if model.id2label is None:
            model.id2label = [f"LABEL_{i}" for i in range(model.config.num_labels)]
        return model
