"""lmlab: train Transformer language models where the training objective is the thing you choose.

The names below are imported lazily (on first use), so ``import lmlab`` stays cheap: the CLI and the config
code do not pay for torch until they need it.

Using a trained model::

    import lmlab

    model, tokenizer = lmlab.load("runs/mlm")                 # an lmlab checkpoint (or run directory)
    fill = lmlab.pipeline("fill-mask", model="runs/mlm")
    fill("The cat sat on the [MASK].")

    from lmlab import AutoTokenizer, AutoModelForMaskedLM     # Hugging Face style
    tok = AutoTokenizer.from_pretrained("runs/mlm")
    model = AutoModelForMaskedLM.from_pretrained("runs/mlm")
    inputs = tok("The cat sat on the [MASK].", return_tensors="pt")
    logits = model(**inputs).logits
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "AutoModel": "lmlab.auto",
    "AutoModelForCausalLM": "lmlab.auto",
    "AutoModelForMaskedLM": "lmlab.auto",
    "AutoModelForSeq2SeqLM": "lmlab.auto",
    "AutoModelForSequenceClassification": "lmlab.auto",
    "AutoTokenizer": "lmlab.auto",
    "BatchEncoding": "lmlab.auto",
    "load": "lmlab.auto",
    "pipeline": "lmlab.infer.pipelines",
    "pretrain": "lmlab.train.trainer",
    "finetune": "lmlab.train.finetune",
    "evaluate": "lmlab.eval.task",
    "load_config": "lmlab.config",
    "generate": "lmlab.infer.generate",
    "generate_text": "lmlab.infer.generate",
    "fill_mask": "lmlab.infer",
    "infill": "lmlab.infer.infill",
    "score": "lmlab.infer.score",
    "score_batch": "lmlab.infer.score",
    "file_perplexity": "lmlab.infer.score",
}

__all__ = sorted([*_LAZY, "__version__"])

def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmlab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
