"""``lmlab.pipeline``: a trained model behind one call, with Hugging Face–shaped outputs.

==========================  ===================  ===========================================================
task                        model                output per input
==========================  ===================  ===========================================================
``fill-mask``               encoder, or decoder  per mask: ``[{"score", "token", "token_str", "sequence"}]``
                            trained with MLM     (one mask: that list; several: a list of them)
``text-generation``         decoder (causal LM)  ``[{"generated_text": prompt + continuation}]``
``text2text-generation``    encoder-decoder      ``[{"generated_text": ...}]``
``translation``             encoder-decoder      ``[{"translation_text": ...}]`` (the input as it is: a task
                                                 prefix such as ``"translate English to German: "`` is yours)
``summarization``           encoder-decoder      ``[{"summary_text": ...}]``
``score``                   any                  ``{"log_prob", "num_tokens", "perplexity", "token_log_probs",
                                                 "tokens"}`` (see :mod:`lmlab.infer.score`)
``infill``                  decoder trained      ``{"middle", "filled_text"}``: called with a prefix and a
                            with ``fim``         suffix (see :mod:`lmlab.infer.infill`)
==========================  ===================  ===========================================================

A list of inputs gives a list of outputs. Example::

    fill = lmlab.pipeline("fill-mask", model="runs/mlm")
    fill("The cat sat on the [MASK].")[0]["token_str"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmlab.auto import AutoTokenizer, ModelKindError, as_auto_tokenizer, check_model_kind, load_for_task
from lmlab.infer import InferenceError, cut_at_eos, fill_mask_candidates

__all__ = ["TASKS", "FillMaskPipeline", "FineTunedPipeline", "InfillPipeline", "ModelKindError", "Pipeline",
           "ScorePipeline", "SummarizationPipeline", "Text2TextGenerationPipeline", "TextGenerationPipeline",
           "TranslationPipeline", "pipeline"]


class Pipeline:
    """A model, its tokenizer and the task's defaults. Call it with a text or a list of texts."""

    task = ""

    def __init__(self, model: torch.nn.Module, tokenizer: AutoTokenizer, **defaults: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = defaults

    def __call__(self, inputs: str | list[str], **options: Any) -> Any:
        """Run the task on one text (its output) or a list of texts (a list of outputs)."""
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not all(isinstance(t, str) for t in texts):
            raise InferenceError(f"the {self.task} pipeline takes a string or a list of strings")
        if not texts:
            return []
        outputs = self._run(texts, **{**self.defaults, **options})
        return outputs[0] if single else outputs

    def _run(self, texts: list[str], **options: Any) -> list[Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={self.model.config.arch}, tokenizer={self.tokenizer})"


class FillMaskPipeline(Pipeline):
    """The ``top_k`` most likely tokens at each mask token (the tokenizer's ``mask_token``)."""

    task = "fill-mask"

    def _run(self, texts: list[str], top_k: int = 5) -> list[Any]:
        tok = self.tokenizer
        outputs = []
        for text in texts:
            ids, where, probs, cands = fill_mask_candidates(self.model, tok.lmlab_tokenizer, text, top_k)
            single = len(where) == 1
            per_mask = []
            for pos, row_p, row_i in zip(where.tolist(), probs.tolist(), cands.tolist(), strict=True):
                found = []
                for p, i in zip(row_p, row_i, strict=True):
                    filled = ids.tolist()
                    filled[pos] = i
                    # As transformers: special tokens are left out of the sequence for one mask; with several,
                    # they stay, so the other masks show.
                    found.append({"score": p, "token": i, "token_str": tok.decode([i]),
                                  "sequence": tok.decode(filled, skip_special_tokens=single)})
                per_mask.append(found)
            outputs.append(per_mask[0] if single else per_mask)
        return outputs


def _generation_defaults(tok: AutoTokenizer, options: dict[str, Any]) -> dict[str, Any]:
    options = dict(options)
    options.setdefault("eos_token_id", tok.eos_token_id)
    options.setdefault("pad_token_id", tok.pad_token_id)
    return options


class TextGenerationPipeline(Pipeline):
    """Continue prompts with a decoder (:func:`lmlab.generate`; greedy unless ``do_sample=True``)."""

    task = "text-generation"

    def _run(self, texts: list[str], max_new_tokens: int = 50, return_full_text: bool = True,
             keep_special_tokens: bool = False, **generate_kwargs: Any) -> list[Any]:
        from lmlab.infer.generate import generate, pad_batch

        tok = self.tokenizer
        options = _generation_defaults(tok, generate_kwargs)
        prompts = [tok.encode(t) for t in texts]  # the tokenizer's template (Llama's BOS); lmlab's adds nothing
        if not all(prompts):
            raise InferenceError(f"the prompt is empty: {texts[[bool(p) for p in prompts].index(False)]!r}")
        ids, mask = pad_batch(prompts, left=True)  # padding is masked out
        T = ids.shape[1]
        out = generate(self.model, ids, mask, max_new_tokens=max_new_tokens, **options)  # (B * n, T + new)
        n = out.shape[0] // len(prompts)
        outputs: list[list[dict[str, str]]] = [[] for _ in texts]
        for k, row in enumerate(out[:, T:].tolist()):
            b = k // n
            new = cut_at_eos(row, options["eos_token_id"])
            # As transformers does: decode prompt + continuation together (spacing at the seam is right),
            # then cut the decoded prompt off.
            decode = tok.lmlab_tokenizer.decode_generated  # sentinels kept (see Tokenizer.decode_generated)
            full = decode(prompts[b] + new, keep_special_tokens)
            continuation = full[len(decode(prompts[b], keep_special_tokens)):]
            outputs[b].append({"generated_text": texts[b] + continuation if return_full_text else continuation})
        return outputs


class Text2TextGenerationPipeline(Pipeline):
    """Generate an output text from an input text with an encoder-decoder (:func:`lmlab.generate`)."""

    task = "text2text-generation"
    key = "generated_text"

    def _run(self, texts: list[str], max_new_tokens: int = 50, keep_special_tokens: bool = False,
             **generate_kwargs: Any) -> list[Any]:
        from lmlab.infer.generate import generate, pad_batch
        from lmlab.objectives.base import decoder_start_id

        tok = self.tokenizer
        options = _generation_defaults(tok, generate_kwargs)
        options.setdefault("decoder_start_token_id", decoder_start_id(tok.lmlab_tokenizer, self.model))
        sources = [tok.encode(t) for t in texts]  # the tokenizer's template (T5 appends </s>)
        if not all(sources):
            raise InferenceError(f"the input is empty: {texts[[bool(s) for s in sources].index(False)]!r}")
        ids, mask = pad_batch(sources)  # right-padded; padding is masked out
        out = generate(self.model, ids, mask, max_new_tokens=max_new_tokens, **options)  # (B * n, 1 + new)
        n = out.shape[0] // len(sources)
        outputs: list[list[dict[str, str]]] = [[] for _ in texts]
        for k, row in enumerate(out[:, 1:].tolist()):
            text = tok.lmlab_tokenizer.decode_generated(cut_at_eos(row, options["eos_token_id"]), keep_special_tokens)
            outputs[k // n].append({self.key: text})
        return outputs

    def __call__(self, inputs: str | list[str], **options: Any) -> Any:
        out = super().__call__(inputs, **options)
        if not isinstance(inputs, str) and all(len(o) == 1 for o in out):
            return [o[0] for o in out]  # as transformers: a list of inputs, one output each -> a flat list
        return out


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translate with an encoder-decoder trained to; the input goes in as it is."""

    task = "translation"
    key = "translation_text"


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summarize with an encoder-decoder trained to; the input goes in as it is."""

    task = "summarization"
    key = "summary_text"


class ScorePipeline(Pipeline):
    """Log-probability and perplexity of texts (of targets given sources for an encoder-decoder)."""

    task = "score"

    def __call__(self, inputs: str | list[str], target: str | list[str] | None = None, **options: Any) -> Any:
        """Score one text or a list; ``target`` (encoder-decoders): one target, or a list matching ``inputs``."""
        if target is not None and isinstance(inputs, str) != isinstance(target, str):
            raise InferenceError("give one target for one input, or a list of targets for a list of inputs")
        if target is not None:
            options["targets"] = [target] if isinstance(target, str) else list(target)
        return super().__call__(inputs, **options)

    def _run(self, texts: list[str], **options: Any) -> list[dict[str, Any]]:
        from lmlab.infer.score import score_batch

        tok = self.tokenizer
        return [{"log_prob": s.log_prob, "num_tokens": s.num_tokens, "perplexity": s.perplexity,
                 "token_log_probs": s.token_log_probs, "tokens": [tok.decode([i]) for i in s.token_ids]}
                for s in score_batch(self.model, tok, texts, **options)]


class InfillPipeline(Pipeline):
    """The middle between a prefix and a suffix, from a decoder trained with the ``fim`` objective
    (:func:`lmlab.infer.infill.infill`: greedy unless ``do_sample=True``; ``mode`` defaults to the checkpoint's)."""

    task = "infill"

    def __call__(self, prefix: str | list[str], suffix: str | list[str] = "", **options: Any) -> Any:
        """Fill between one prefix and one suffix (a dict), or between lists of them (a list of dicts)."""
        suffixes = [suffix] if isinstance(suffix, str) else list(suffix)
        if not all(isinstance(s, str) for s in suffixes):
            raise InferenceError("the infill pipeline takes a suffix string or a list of them")
        return super().__call__(prefix, suffixes=suffixes, **options)

    def _run(self, texts: list[str], suffixes: list[str], **options: Any) -> list[dict[str, str]]:
        from lmlab.infer.infill import infill

        middles = infill(self.model, self.tokenizer, texts, suffixes, **options)
        return [{"middle": m, "filled_text": p + m + s} for p, m, s in zip(texts, middles, suffixes, strict=True)]


class FineTunedPipeline(Pipeline):
    """A model fine-tuned by ``lmlab finetune`` (a ``seq2seq`` or ``classify`` run), its inputs formatted by the
    run's own objective (prefix, special tokens, the decoder's separator): text to text gives
    ``[{key: output}]``, text classification ``{"label", "score"}``."""

    def __init__(self, model: torch.nn.Module, tokenizer: AutoTokenizer, objective: Any, task: str,
                 **defaults: Any) -> None:
        super().__init__(model, tokenizer, **defaults)
        self.objective, self.task = objective, task
        self.key = {"translation": "translation_text", "summarization": "summary_text"}.get(task, "generated_text")

    def _run(self, texts: list[str], **options: Any) -> list[Any]:
        from lmlab.eval.task import classify, predict

        if self.objective.name == "classify":
            labels, scores = classify(self.model, self.objective, texts, **options)
            return [[{"label": label, "score": score}] for label, score in zip(labels, scores, strict=True)]
        options.setdefault("max_new_tokens", self.objective.max_target)
        return [[{self.key: out}] for out in predict(self.model, self.objective, texts, **options)]

    def __call__(self, inputs: str | list[str], **options: Any) -> Any:
        out = super().__call__(inputs, **options)  # as transformers: one text -> [output], a list -> a flat list
        return out if isinstance(inputs, str) else [o[0] for o in out]


_CLASSES: dict[str, type[Pipeline]] = {cls.task: cls for cls in (
    FillMaskPipeline, TextGenerationPipeline, Text2TextGenerationPipeline, TranslationPipeline,
    SummarizationPipeline, ScorePipeline, InfillPipeline)}
TASKS = tuple(_CLASSES)
_KIND = {"fill-mask": "masked-lm", "text-generation": "causal-lm", "text2text-generation": "seq2seq-lm",
         "translation": "seq2seq-lm", "summarization": "seq2seq-lm", "score": "any", "infill": "causal-lm"}


def pipeline(task: str, model: str | Path | tuple | torch.nn.Module, tokenizer: Any = None,
             device: str | torch.device | None = None, dtype: str = "fp32", quantize: str | None = None,
             **defaults: Any) -> Pipeline:
    """A pipeline for ``task`` on a checkpoint or on a model already loaded.

    Args:
        task: one of :data:`TASKS` (``"translation_en_to_de"`` style names mean ``"translation"``).
        model: a checkpoint or run directory; a ``(model, tokenizer)`` pair; or a model with ``tokenizer=``.
        tokenizer: an lmlab ``Tokenizer``, an :class:`~lmlab.auto.AutoTokenizer` or a path; overrides the
            checkpoint's.
        device: where the model runs (a checkpoint loads on the CPU by default; a model given stays where it
            is unless a device is named).
        dtype: a checkpoint's weights, ``"fp32"`` or ``"bf16"`` (it is loaded to run only; a model given keeps
            its own); ``quantize="int8"`` stores its weight matrices as int8 (:mod:`lmlab.model.quant`).
        defaults: default options of every call (``top_k=10``, ``max_new_tokens=40``, ``num_beams=4``...; infill's
            ``mode`` defaults to the one a checkpoint was trained on most).

    Returns:
        The task's :class:`Pipeline`; call it with a text or a list of texts.

    Raises:
        InferenceError: an unknown task, or no tokenizer for a model given as a module.
        ModelKindError: a model of the wrong kind for the task (fill-mask on a causal decoder, translation on
            a decoder...).
        CheckpointError: a checkpoint that cannot be loaded.
    """
    name = "translation" if task.startswith("translation_") else task
    if name not in (*_CLASSES, "text-classification"):
        raise InferenceError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}, text-classification")
    if isinstance(model, (str, Path)):
        from lmlab.auto import trained_objective
        from lmlab.objectives import TASKS as FINETUNING

        fine_tuned = trained_objective(model)
        if fine_tuned in FINETUNING or name == "text-classification":
            wanted = "classify" if name == "text-classification" else "seq2seq"
            if fine_tuned != wanted:
                raise ModelKindError(f"{model} was not fine-tuned for {name} (`lmlab finetune` with objective "
                                     f"{wanted}); it was trained with {fine_tuned or 'no known objective'}")
            if name not in ("translation", "summarization", "text2text-generation", "text-classification"):
                raise ModelKindError(f"{model} is a fine-tuned {wanted} model; use the translation, summarization, "
                                     "text2text-generation or text-classification pipeline")
            from lmlab.eval.task import load_task

            m, objective, _ = load_task(model, device or "cpu", for_inference=True, dtype=dtype, quantize=quantize)
            return FineTunedPipeline(m, as_auto_tokenizer(objective.tokenizer), objective, name, **defaults)
    kind = _KIND[name]
    if isinstance(model, (str, Path)):
        m, tok = load_for_task(model, kind, device or "cpu", for_inference=True, dtype=dtype,
                               quantize=quantize)
        source = str(model)
        if name == "infill":
            from lmlab.infer.infill import trained_mode

            defaults.setdefault("mode", trained_mode(model))
    else:
        m, tok = model if isinstance(model, tuple) else (model, None)
        if not isinstance(m, torch.nn.Module) or not hasattr(m, "config"):
            raise InferenceError("model must be a checkpoint path, a (model, tokenizer) pair or an lmlab model")
        if device is not None:
            m = m.to(device)
        source = "the model"
        check_model_kind(m, kind, source)
    if tokenizer is not None:
        tok = AutoTokenizer.from_pretrained(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    if tok is None:
        raise InferenceError("no tokenizer: pass model=(model, tokenizer) or tokenizer=...")
    m.eval()
    return _CLASSES[name](m, as_auto_tokenizer(tok), **defaults)
