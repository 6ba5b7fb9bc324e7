"""Fine-tuning and task evaluation: lmlab against Hugging Face ``transformers`` on the same T5 weights, in one process.

A T5 v1.1-like model (gated GELU, relative bias, untied head) is built in ``transformers`` with random weights,
saved with a word-level tokenizer (one word per id, T5's ``... </s>`` template) and imported into lmlab through
``lmlab.interop.load_hf``, so both sides hold the same tensors. The examples are synthetic, with lengths like a
translation corpus: sources of 20-120 tokens, targets of about half (10-60).

- **Fine-tuning** (tokens/s, real source + target tokens): lmlab's step is what ``lmlab.train.finetune`` does
  per step: the ``seq2seq`` objective's ``make_batch`` and ``loss`` (the head at target positions only), backward,
  gradient clipping at 1.0 and lmlab's fused AdamW. The batches are drawn by lmlab's own ``ExampleSampler``
  (pools sorted by length). Hugging Face's step is the work ``Seq2SeqTrainer`` does per step, done by hand
  rather than through ``train()``: ``DataCollatorForSeq2Seq`` pads the same examples (its batches are checked
  equal to lmlab's, tensor for tensor), ``model(**batch).loss`` (``labels=``), backward, clipping at 1.0
  (Trainer's ``max_grad_norm``) and ``torch.optim.AdamW(fused=True)`` (Trainer's ``adamw_torch_fused``). The
  first batch's loss is checked equal on both sides. One run is ``--batches`` steps; each side trains its own
  copy of the model.
- **Evaluation** (sentences/s): ``lmlab.eval.task.predict`` (beam search, sources sorted by length, batches of
  ``--batch``) against ``tokenizer(...)``, ``model.generate(num_beams=...)`` and ``batch_decode`` over the same
  sorted batches; the outputs are compared sentence by sentence (with one word per id, equal text is equal ids).

Both: fp32, dropout 0, SDPA attention; one warm-up run each, then the median of ``--runs`` timed runs that
alternate between the two sides.

    .venv/bin/python benchmarks/finetune.py [--runs 3] [--batches 4] [--sources 64] [--beams 4] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from reference import hf_t5
from timing import alternating_medians
from tokenizers import Tokenizer as HFTokenizers
from tokenizers import models, pre_tokenizers, processors

from lmlab.config import Config, DataConfig, ObjectiveConfig
from lmlab.data.examples import Examples, ExampleSampler
from lmlab.eval.task import predict
from lmlab.interop import load_hf
from lmlab.objectives import IGNORE, build_objective
from lmlab.tokenizer import Tokenizer
from lmlab.train.optim import build_optimizer

SPECIALS = ["[PAD]", "</s>", "[UNK]"]  # ids 0, 1, 2: T5's pad (= decoder start) and EOS


@dataclass
class Size:
    vocab: int
    d: int
    layers: int
    heads: int
    batch: int  # training examples per step
    new: int  # max_new_tokens in evaluation


FULL = Size(vocab=8192, d=384, layers=6, heads=6, batch=16, new=48)
QUICK = Size(vocab=512, d=64, layers=2, heads=4, batch=4, new=8)


def word_tokenizer(vocab: int) -> Tokenizer:
    """A word-level tokenizer: ``[PAD]``, ``</s>``, ``[UNK]``, then ``w3`` ... ``w{vocab-1}``, one id per word;
    its template appends ``</s>`` as T5's does."""
    words = {t: i for i, t in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), vocab)}
    tok = HFTokenizers(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return Tokenizer(tok, {"pad": "[PAD]", "eos": "</s>", "unk": "[UNK]"})


def t5_pair(s: Size, tmp: Path):
    """A random Hugging Face T5 v1.1, the lmlab model and tokenizer imported from it, and the same tokenizer as
    ``transformers`` loads it."""
    hf = hf_t5(s.vocab, s.d, s.layers, s.heads, d_ff=int(4 * s.d * 2 / 3) // 32 * 32).eval()
    hf.save_pretrained(tmp)
    word_tokenizer(s.vocab).save(tmp)
    model, tokenizer = load_hf(tmp)  # the same weights, through lmlab's own importer
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp / "tokenizer.json"), pad_token="[PAD]",
                                                  eos_token="</s>", unk_token="[UNK]")
    return hf, model, tokenizer, hf_tok


def synthetic(n: int, vocab: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` (source, target) token arrays: sources of 20-120 tokens, targets about half as long (10-60)."""
    rng = np.random.default_rng(seed)
    src_len = rng.integers(20, 121, n)
    tgt_len = np.clip(src_len // 2 + rng.integers(-8, 9, n), 10, 60)
    draw = lambda k: rng.integers(len(SPECIALS), vocab, k)  # noqa: E731
    return [draw(k) for k in src_len], [draw(k) for k in tgt_len]


class InMemory:
    """The examples as lmlab's ``ExampleSampler`` reads an ``ExampleDataset``."""

    split = "train"

    def __init__(self, sources: list[np.ndarray], targets: list[np.ndarray]) -> None:
        self.sources, self.targets = sources, targets

    def __len__(self) -> int:
        return len(self.sources)

    def batch(self, index: np.ndarray) -> Examples:
        return Examples([self.sources[i] for i in index], [self.targets[i] for i in index])


def finetune_row(s: Size, hf0, model0, tokenizer, hf_tok, steps: int, runs: int) -> dict:
    """Tokens/s of ``steps`` fine-tuning steps on each side (each on its own copy of the weights)."""
    cfg = Config(model=model0.config, data=DataConfig(seq_len=128, decoder_seq_len=64),
                 objective=ObjectiveConfig(name="seq2seq"))
    ours, hf = copy.deepcopy(model0).train(), copy.deepcopy(hf0).train()
    objective = build_objective(cfg, tokenizer)
    objective.attach(ours)
    sources, targets = synthetic(s.batch * 50, s.vocab, seed=1)  # one pool of the sampler: 50 batches
    data = InMemory(sources, targets)
    lengths = np.array([len(x) + 1 + len(y) + 1 for x, y in zip(sources, targets, strict=True)])  # as finetune
    sampler = ExampleSampler(data, lengths, s.batch, seed=0)
    examples = [sampler.sample()[0] for _ in range(steps)]
    g = torch.Generator().manual_seed(0)
    batches = [objective.make_batch(e, g) for e in examples]
    tokens = sum(int(b.attention_mask.sum() + b.decoder_attention_mask.sum()) for b in batches)
    # Hugging Face's features, as a tokenized dataset holds them: input ids and labels, each ending in </s>
    features = [[{"input_ids": [*x.tolist(), objective.eos], "labels": [*y.tolist(), objective.eos]}
                 for x, y in zip(e.sources, e.targets, strict=True)] for e in examples]
    collator = transformers.DataCollatorForSeq2Seq(hf_tok, model=hf, label_pad_token_id=IGNORE)
    first, ref = collator(features[0]), batches[0]
    real = ref.decoder_attention_mask.bool()  # Hugging Face's decoder reads EOS, lmlab's pad, after each target
    assert {*first} == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}, sorted(first)
    for theirs, mine in ((first["input_ids"], ref.input_ids), (first["attention_mask"], ref.attention_mask),
                         (first["labels"], ref.targets),
                         (first["decoder_input_ids"][real], ref.decoder_input_ids[real])):
        assert torch.equal(theirs, mine), "Hugging Face's collated batch differs from lmlab's"
    loss_sum, n, _ = objective.loss(ours, ref)
    torch.testing.assert_close(loss_sum / n, hf(**first).loss, atol=1e-4, rtol=1e-4)

    opt_ours = build_optimizer(ours, cfg.train)  # fused AdamW, as the trainer builds it
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)

    def step(module, opt, loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)  # both defaults: grad_clip, max_grad_norm
        opt.step()
        opt.zero_grad(set_to_none=True)

    def run_ours() -> None:
        for e in examples:
            batch = objective.make_batch(e, g)
            loss_sum, n, _ = objective.loss(ours, batch)  # summed over targets; the trainer divides
            step(ours, opt_ours, loss_sum / n)

    def run_hf() -> None:
        for f in features:
            step(hf, opt_hf, hf(**collator(f)).loss)

    (ours_s, _), (hf_s, _) = alternating_medians([run_ours, run_hf], runs)
    real = tokens / sum(b.input_ids.numel() + b.decoder_input_ids.numel() for b in batches)
    return dict(kind="finetune", row=f"seq2seq fine-tuning, {steps} steps x {s.batch}", lmlab=tokens / ours_s,
                hf=tokens / hf_s, ratio=hf_s / ours_s, unit="tokens/s", real_share=real)


def evaluate_row(s: Size, hf, model, tokenizer, hf_tok, n: int, beams: int, batch: int, runs: int) -> dict:
    """Sentences/s of beam-search decoding ``n`` sources, and how many outputs differ between the sides."""
    cfg = Config(model=model.config, data=DataConfig(seq_len=128, decoder_seq_len=64),
                 objective=ObjectiveConfig(name="seq2seq"))
    objective = build_objective(cfg, tokenizer)
    objective.attach(model)
    sources = [" ".join(f"w{i}" for i in x) for x in synthetic(n, s.vocab, seed=2)[0]]

    def run_ours() -> list[str]:
        return predict(model, objective, sources, num_beams=beams, batch_size=batch, max_new_tokens=s.new)

    def run_hf() -> list[str]:  # the same batches: sorted by length, longest first, ties in input order
        rows = hf_tok(sources)["input_ids"]
        order = sorted(range(n), key=lambda i: -len(rows[i]))
        out = [""] * n
        for start in range(0, n, batch):
            chunk = order[start:start + batch]
            inputs = hf_tok.pad({"input_ids": [rows[i] for i in chunk]}, return_tensors="pt")
            generated = hf.generate(**inputs, num_beams=beams, max_new_tokens=s.new, do_sample=False)
            for i, text in zip(chunk, hf_tok.batch_decode(generated, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
        return out

    with torch.no_grad():
        (ours_s, ours_out), (hf_s, hf_out) = alternating_medians([run_ours, run_hf], runs)
    differ = sum(a != b for a, b in zip(ours_out, hf_out, strict=True))
    words = sum(len(t.split()) for t in ours_out) / n
    return dict(kind="evaluate", row=f"beam search {beams}, {n} sources, batch {batch}", lmlab=n / ours_s,
                hf=n / hf_s, ratio=hf_s / ours_s, unit="sentences/s", differ=differ, n=n, same=differ == 0,
                mean_words=words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs (median) after one warm-up")
    parser.add_argument("--batches", type=int, default=4, help="fine-tuning steps in one run")
    parser.add_argument("--sources", type=int, default=64, help="sources decoded in one evaluation run")
    parser.add_argument("--beams", type=int, default=4, help="beam width in evaluation")
    parser.add_argument("--eval-batch", type=int, default=32, help="sources per decoding batch")
    parser.add_argument("--quick", action="store_true", help="a tiny model: runs in seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    n_sources = min(args.sources, 16) if args.quick else args.sources
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"fp32")
    print(f"model: T5 v1.1-like, {s.layers}+{s.layers} layers, d {s.d}, {s.heads} heads, vocab {s.vocab}; "
          f"sources 20-120 tokens, targets 10-60; 1 warm-up + median of {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        hf, model, tokenizer, hf_tok = t5_pair(s, Path(tmp))
        print(f"{'row':<38}{'lmlab':>9}{'HF':>9}{'ratio':>7}  unit")
        records = []
        ft = finetune_row(s, hf, model, tokenizer, hf_tok, args.batches, args.runs)
        print(f"{ft['row']:<38}{ft['lmlab']:>9.0f}{ft['hf']:>9.0f}{ft['ratio']:>7.2f}  tokens/s (source + target, "
              f"{ft['real_share']:.0%} of the padded batch), same batches and loss", flush=True)
        records.append(ft)
        ev = evaluate_row(s, hf, model, tokenizer, hf_tok, n_sources, args.beams, args.eval_batch, args.runs)
        print(f"{ev['row']:<38}{ev['lmlab']:>9.1f}{ev['hf']:>9.1f}{ev['ratio']:>7.2f}  sentences/s, max "
              f"{s.new} new tokens; {ev['differ']} of {ev['n']} outputs differ (mean {ev['mean_words']:.1f} "
              f"tokens)", flush=True)
        records.append(ev)
    if args.json:
        Path(args.json).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
