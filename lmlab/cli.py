"""The ``lmlab`` command: a thin skin over the Python API. Each subcommand is one library call."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError


def _tokenizer_train(args: argparse.Namespace) -> None:
    from lmlab.tokenizer import train_tokenizer

    files = [Path(f) for f in args.files]  # paths, even a missing one (a string naming nothing would be text)
    tok = train_tokenizer(files, kind=args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                          sentinels=args.sentinels, lowercase=args.lowercase, text_field=args.text_field)
    tok.save(args.out)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} tokens -> {Path(args.out) / 'tokenizer.json'}")


def _prepare(args: argparse.Namespace) -> None:
    from lmlab.data import prepare
    from lmlab.tokenizer import Tokenizer

    manifest = prepare(args.corpus, Tokenizer.load(args.tokenizer), args.out, valid_size=args.valid_size,
                       num_workers=args.workers, progress=not args.quiet, valid=args.valid, text_field=args.text_field,
                       overwrite=args.overwrite)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return
    splits = "; ".join(f"{name} {info.docs:,} documents, {info.tokens:,} tokens" for name, info in
                       manifest.splits.items())
    print(f"wrote {args.out}: {splits} ({manifest.dtype}, vocabulary {manifest.vocab_size:,})"
          + (f"; {manifest.replaced_bytes:,} bytes of invalid UTF-8 replaced" if manifest.replaced_bytes else ""))


def _pretrain(args: argparse.Namespace, overrides: list[str]) -> None:
    from lmlab.train import pretrain

    _train(args, overrides, pretrain)


def _finetune(args: argparse.Namespace, overrides: list[str]) -> None:
    from lmlab.train.finetune import finetune

    if args.init is not None:
        overrides = [*overrides, "--finetune.init", args.init]
    if args.scratch:
        overrides = [*overrides, "--finetune.scratch", "true"]
    _train(args, overrides, finetune)


def _train(args: argparse.Namespace, overrides: list[str], run) -> None:
    from lmlab.config import config_from_dict, load_config, parse_overrides
    from lmlab.objectives import check_objective
    from lmlab.train import config_from_checkpoint
    from lmlab.train.distributed import teardown

    extra: dict = parse_overrides(overrides)
    if args.preset:
        extra["preset"] = args.preset
    if args.resume and not args.config:  # continue with the run's own configuration
        base = config_from_checkpoint(args.resume).to_dict()
        for section, values in extra.items():
            if section == "preset":
                base["preset"] = values
            else:
                base.setdefault(section, {}).update(values)
        cfg = config_from_dict(base)
    else:
        cfg = load_config(args.config, extra)
    check_objective(cfg)
    try:
        result = run(cfg, resume=args.resume, overwrite=args.overwrite)
    finally:
        teardown()
    speaks = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 alone says how it ended
    if result.interrupted:
        if speaks:
            print(f"interrupted; saved step {result.step} to {result.checkpoint}; continue with --resume "
                  f"{result.out_dir}", file=sys.stderr)
        raise KeyboardInterrupt
    if speaks:
        print(f"done; saved step {result.step} to {result.checkpoint}")


def _demo(args: argparse.Namespace, overrides: list[str]) -> None:
    from lmlab.demo import run_demo

    run_demo(corpus=args.corpus, out_dir=args.out, steps=args.steps, minutes=args.minutes, overrides=overrides)


def _texts(args: argparse.Namespace) -> list[str]:
    """The texts of a command: its arguments, else the lines of --file, else the lines of standard input."""
    from lmlab.infer import InferenceError

    if args.text:
        return list(args.text)
    if getattr(args, "file", None):
        path = Path(args.file)
        if not path.is_file():
            raise InferenceError(f"{path} does not exist")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    else:
        lines = sys.stdin.read().splitlines()
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise InferenceError("no text given: pass it as an argument, with --file, or on standard input")
    return texts


def _fill_mask(args: argparse.Namespace) -> None:
    from lmlab.infer.pipelines import pipeline

    fill = pipeline("fill-mask", model=args.checkpoint)
    results = {text: fill(text, top_k=args.top_k) for text in _texts(args)}
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
        return
    for text, out in results.items():
        print(text)
        per_mask = [out] if out and isinstance(out[0], dict) else out
        for i, candidates in enumerate(per_mask):
            print(f"  mask {i}: " + "   ".join(f"{c['token_str']!r} {c['score']:.3f}" for c in candidates))


class _Stream:
    """A streamer for generate: prints the text each new token adds (``before`` ahead of the first one), so that
    ``text`` stays None until something was generated."""

    def __init__(self, decode, before: str = "") -> None:
        self.decode, self.before = decode, before
        self.ids: list[int] = []
        self.text: str | None = None

    def __call__(self, column) -> None:
        if self.text is None:
            print(self.before, end="")
            self.text = ""
        self.ids.append(int(column[0]))
        now = self.decode(self.ids)
        print(now[len(self.text):], end="", flush=True)
        self.text = now


SCORE_ROWS = 64  # the rows a product takes when whole texts are scored or classified: the layout for many rows


def _generate(args: argparse.Namespace) -> None:
    from lmlab.infer import InferenceError
    from lmlab.infer.generate import generate_text
    from lmlab.train import load_model

    if args.system and not args.chat:
        raise InferenceError("--system is a chat message: pass --chat as well")
    model, tok = load_model(args.checkpoint, for_inference=True, dtype=args.dtype, quantize=args.quantize,
                            rows=args.num_beams)  # one prompt at a time, its beams
    options = dict(max_new_tokens=args.max_new_tokens, **_sampling(args), repetition_penalty=args.repetition_penalty,
                   num_beams=args.num_beams)
    options["do_sample"] &= args.num_beams == 1  # beam search is deterministic
    prompts = _texts(args)
    stream = not args.json and args.num_beams == 1 and len(prompts) == 1
    seq2seq = model.config.arch == "encoder-decoder"
    if args.chat:
        from lmlab.infer.chat import Chat

        chat = Chat(model, tok, system=args.system, **options)
    results = []
    for prompt in prompts:  # one at a time: a prompt samples the same whatever else is asked
        show = _Stream(lambda ids: tok.decode_generated(ids, args.keep_special_tokens),
                       before="" if seq2seq or args.chat else prompt)
        if args.chat:  # one turn, the prompt as the user's message
            chat.reset()
            text = chat.send(prompt, streamer=show if stream else None)
        else:
            (text,) = generate_text(model, tok, prompt, streamer=show if stream else None,
                                    keep_special_tokens=args.keep_special_tokens, **options)
        results.append({"prompt": prompt, "generated_text": text if seq2seq or args.chat else prompt + text})
        if stream:
            print(results[-1]["generated_text"] if show.text is None else "")  # nothing was generated
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    elif not stream:
        for r in results:
            print(r["generated_text"])


def _chat(args: argparse.Namespace) -> None:
    from lmlab.infer.chat import Chat
    from lmlab.train import load_model

    model, tok = load_model(args.checkpoint, for_inference=True, dtype=args.dtype, quantize=args.quantize)
    chat = Chat(model, tok, system=args.system, max_new_tokens=args.max_new_tokens, **_sampling(args),
                repetition_penalty=args.repetition_penalty)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.checkpoint}: /reset forgets the conversation, /exit (or Ctrl-D) quits")
    while True:
        try:
            text = input(">>> " if interactive else "").strip()
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            chat.reset()
            print("(conversation forgotten)")
        elif text.startswith("/"):
            print(f"unknown command {text.split()[0]}: /reset forgets the conversation, /exit quits")
        elif text:
            show = _Stream(tok.decode)  # the end-of-turn token is special: not shown
            try:
                chat.send(text, streamer=show)
            except KeyboardInterrupt:  # stops this reply, which the conversation forgets
                print(" [stopped]", end="")
            print()


def _infill(args: argparse.Namespace) -> None:
    from lmlab.infer.pipelines import pipeline

    fill = pipeline("infill", model=args.checkpoint, **({"mode": args.mode} if args.mode else {}))
    out = fill(args.prefix, args.suffix, max_new_tokens=args.max_new_tokens, **_sampling(args))
    print(json.dumps({"prefix": args.prefix, "suffix": args.suffix, "mode": fill.defaults["mode"], **out},
                     ensure_ascii=False, indent=2) if args.json else out["middle"])


def _score(args: argparse.Namespace) -> None:
    from lmlab.infer import InferenceError
    from lmlab.infer.score import file_perplexity, score_batch, scores_first_token
    from lmlab.train import load_model

    model, tok = load_model(args.checkpoint, for_inference=True, dtype=args.dtype, quantize=args.quantize,
                            rows=SCORE_ROWS)
    if args.perplexity:
        if not args.file:
            raise InferenceError("--perplexity needs --file")
        corpus = file_perplexity(model, tok, args.file, unit=args.unit, max_length=args.max_length,
                                 stride=args.stride, bos=True if args.bos else None)
        out = {"file": args.file, "num_texts": corpus.num_texts, "num_tokens": corpus.num_tokens,
               "nll": corpus.nll, "perplexity": corpus.perplexity}
        print(json.dumps(out, indent=2) if args.json else
              f"{args.file}: {corpus.num_texts} texts, {corpus.num_tokens} tokens, perplexity {corpus.perplexity:.3f}")
        return
    texts = _texts(args)
    targets = [args.target] * len(texts) if args.target is not None else None
    bos = True if args.bos else None
    scores = score_batch(model, tok, texts, targets, max_length=args.max_length, stride=args.stride, bos=bos)
    if not scores_first_token(model, tok, bos):
        print("note: a decoder scores each token from the ones before it, so a text's first token is context, not "
              "scored" + ("; --bos puts the tokenizer's BOS first and scores it too" if tok.bos_id is not None
                          else " (this tokenizer has no BOS token)"), file=sys.stderr)
    rows = [{"text": t, "log_prob": s.log_prob, "num_tokens": s.num_tokens, "perplexity": s.perplexity,
             "token_log_probs": s.token_log_probs} for t, s in zip(texts, scores, strict=True)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in rows:
        print(f"log P = {r['log_prob']:.4f} nats over {r['num_tokens']} tokens, perplexity {r['perplexity']:.3f}: "
              f"{r['text']!r}")


def _evaluate(args: argparse.Namespace) -> None:
    from lmlab.eval.task import evaluate

    result = evaluate(args.checkpoint, args.data, args.split, num_beams=args.num_beams,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit, out=args.out,
                      dtype=args.dtype, quantize=args.quantize)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    names = list(result.scores)
    width = max(len(n) for n in (*result.baselines, "model"))
    print(f"{result.split}: {result.num_examples} examples, {result.examples_per_s:.1f} examples/s; "
          f"predictions in {result.predictions_file}")
    column = max(11, *(len(n) + 2 for n in names))  # (dpo's rewards/accuracies...)
    print(" " * (width + 2) + "".join(f"{n:>{column}}" for n in names))
    for row, scores in [("model", result.scores), *result.baselines.items()]:
        print(f"  {row:<{width}}" + "".join(f"{scores[n]:>{column}.2f}" for n in names))
    for name, signature in result.signatures.items():
        print(f"{name} signature: {signature}")


def _task_texts(args: argparse.Namespace, kind: str) -> None:
    from lmlab.eval.task import classify, load_task, predict

    texts = _texts(args)
    rows = SCORE_ROWS if kind == "classify" else min(len(texts), 32) * args.num_beams  # predict's batches of 32
    model, objective, cfg = load_task(args.checkpoint, for_inference=True, dtype=args.dtype, quantize=args.quantize,
                                      rows=rows)
    if kind == "classify":
        if objective.name != "classify":
            from lmlab.infer import InferenceError

            raise InferenceError(f"{args.checkpoint} was fine-tuned for {objective.name}, not classification")
        labels, probs = classify(model, objective, texts)
        rows = [{"text": t, "label": lab, "score": p} for t, lab, p in zip(texts, labels, probs, strict=True)]
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            for r in rows:
                print(f"{r['label']}\t{r['score']:.3f}\t{r['text']}")
        return
    if objective.name != "seq2seq":
        from lmlab.infer import InferenceError

        raise InferenceError(f"{args.checkpoint} was fine-tuned for {objective.name}, not text to text; use "
                             "`lmlab classify`")
    outputs = predict(model, objective, texts, num_beams=args.num_beams,
                      max_new_tokens=args.max_new_tokens or cfg.finetune.max_new_tokens or cfg.data.decoder_seq_len
                      or cfg.data.seq_len)
    if args.json:
        print(json.dumps([{"input": t, "output": o} for t, o in zip(texts, outputs, strict=True)],
                         ensure_ascii=False, indent=2))
    else:
        print("\n".join(outputs))


def _convert(args: argparse.Namespace) -> None:
    from lmlab.interop import convert_from_hf, convert_to_hf

    if args.direction == "from-hf":
        out = convert_from_hf(args.src, args.dst, allow_pickle=args.allow_pickle)
    else:
        out = convert_to_hf(args.src, args.dst)
    print(f"wrote {out}")


def _lora_merge(args: argparse.Namespace) -> None:
    from lmlab.train.lora import merge

    print(f"wrote {merge(args.run, args.out, overwrite=args.overwrite)}")


def _data_get(args: argparse.Namespace) -> None:
    from lmlab.data.sources import get

    out = get(args.name, args.out, overwrite=args.overwrite, log=lambda message: print(message, file=sys.stderr),
              pair=args.pair, unit=args.unit, min_count=args.min_count, tasks=args.tasks, max_chars=args.max_chars)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    for f in m["origin"]["fetched"]:
        print(f"fetched: {f['kind']} {f['name']} {f['version']}")
    c = m["counts"]
    print(f"wrote {out}: train {c['train']}, valid {c['valid']}, test {c['test']} (total {c['total']}); dropped: "
          + (", ".join(f"{r} {n}" for r, n in m["dropped"].items()) or "nothing"))
    if "labels" in m:
        print(f"{len(m['labels'])} labels (majority {m['majority_label']}); left out {len(m['dropped_labels'])} "
              f"rarer: " + (", ".join(m["dropped_labels"]) or "none"))


def _compare(args: argparse.Namespace) -> None:
    from lmlab.compare import load_compare_config, plan, run_compare
    from lmlab.compare.cells import check_cells
    from lmlab.compare.report import render_plan

    cfg = load_compare_config(args.config)
    if args.plan:
        cells = plan(cfg, args.out)
        check_cells(cells)  # a run of another configuration would be listed as done
        print(render_plan(cfg, cells), end="")
        return
    run_compare(cfg, args.out)


def _at_least(low: float):
    """An argparse type: a finite float >= ``low`` (argparse names the option in its error and exits 2)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}, got {text}")
        return value

    return parse


def _sampling_options(parser: argparse.ArgumentParser, temperature: float, top_k: int) -> None:
    parser.add_argument("--temperature", type=_at_least(0.0), default=temperature, help="0 for greedy decoding")
    parser.add_argument("--top-k", type=int, default=top_k, help="0 to disable")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    """generate's sampling options from --temperature (0: greedy), --top-k, --top-p and --seed."""
    return dict(do_sample=args.temperature > 0, temperature=args.temperature if args.temperature > 0 else 1.0,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def _dtype_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                        help="the weights' type: bf16 reads half the bytes a token (fast on CPUs with AVX-512 BF16 "
                        "or AMX, and on GPUs); default: fp32")
    parser.add_argument("--quantize", choices=["int8", "int8-dynamic"], help="store the weight matrices and the "
                        "token embedding as int8 with a scale per output channel: a quarter of fp32's bytes a token; "
                        "int8: the products run in bf16, the rest of the model in --dtype; int8-dynamic (x86 CPUs): "
                        "the activations are quantized too, as torch.ao's dynamic quantization does, faster and "
                        "less exact")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmlab", description="Train Transformer language models where the "
                                "training objective is the thing you choose.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser("demo", help="pretrain, fine-tune and use small models on a built-in corpus, in about "
                          "8 minutes", description="On the Python standard library's docstrings: train a tokenizer, "
                          "pretrain a decoder (causal LM) and an encoder (masked LM), fine-tune them to summarize a "
                          "docstring and to tell its package (pretrained and from scratch, tested on held-out "
                          "modules), then use them. Each stage is sized to its share of --minutes from a few "
                          "measured steps. Extra --section.key value overrides apply to every run.")
    demo.add_argument("--minutes", type=float, default=8.0, help="training time in all (default: 8)")
    demo.add_argument("--steps", default=None, metavar="N|STAGE=N,...",
                      help="fixed steps instead of --minutes: one count for every stage, or "
                      "clm=N,mlm=N,summarize=N,classify=N as a budgeted run prints them (reproduces it exactly)")
    demo.add_argument("--corpus", help="pretrain on this corpus file (.txt, .md, .jsonl, .csv, .tsv, .parquet; the "
                      "text of a row in --data.text_field) or directory instead; fine-tuning is then left out")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.set_defaults(func=_demo, takes_overrides=True)

    tok = sub.add_parser("tokenizer", help="train a tokenizer").add_subparsers(dest="tok_command", required=True,
                                                                               metavar="SUBCOMMAND")
    tt = tok.add_parser("train", help="train a byte-level BPE, WordPiece or Unigram tokenizer on text files",
                        description="Train a tokenizer with the Hugging Face `tokenizers` library and save it "
                        "as OUT/tokenizer.json.")
    tt.add_argument("files", nargs="+", help="corpus files (.txt, .md, .jsonl, .csv, .tsv, .parquet) or directories")
    tt.add_argument("--out", required=True, help="directory to write tokenizer.json to")
    tt.add_argument("--kind", choices=["bpe", "wordpiece", "unigram"], default="bpe")
    tt.add_argument("--vocab-size", type=int, default=8192)
    tt.add_argument("--min-frequency", type=int, default=2)
    tt.add_argument("--sentinels", type=int, default=0, help="add <extra_id_0>..<extra_id_{N-1}> (T5 style)")
    tt.add_argument("--lowercase", action="store_true")
    tt.add_argument("--text-field", default="text", help="the field of a .jsonl/.csv/.tsv/.parquet row that holds "
                    "its document")
    tt.set_defaults(func=_tokenizer_train)

    pr = sub.add_parser("prepare", help="tokenize a corpus into memory-mapped token shards",
                        description="Tokenize a corpus (.txt, .md, .jsonl, .csv, .tsv, .parquet or a directory) in "
                        "parallel and write memory-mapped token shards, document offsets and a manifest, with a "
                        "validation split: --valid documents, or --valid-size of the corpus.")
    pr.add_argument("corpus", help="a .txt, .md, .jsonl, .csv, .tsv or .parquet file, or a directory of them")
    pr.add_argument("--tokenizer", required=True, help="tokenizer.json, a directory holding it, or a vocab.txt")
    pr.add_argument("--out", required=True, help="output directory for the shards")
    pr.add_argument("--valid", help="a corpus of validation documents (then every document of CORPUS is for "
                    "training)")
    pr.add_argument("--valid-size", "--val-fraction", type=float, default=0.01, help="without --valid: the "
                    "documents held out for validation, below 1 a share of the corpus, else a count (default: 0.01)")
    pr.add_argument("--text-field", default="text", help="the field of a .jsonl/.csv/.tsv/.parquet row that holds "
                    "its document")
    pr.add_argument("--workers", type=int, default=None, help="tokenizer worker processes (default: all cores)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    pr.add_argument("--overwrite", action="store_true", help="replace the shards already in --out")
    pr.set_defaults(func=_prepare)

    pt = sub.add_parser("pretrain", help="train a model with a self-supervised objective",
                        description="Train as a TOML config describes; override any key with "
                        "--section.key value (e.g. --train.max_steps 200). Runs unchanged under torchrun.")
    pt.add_argument("--config", help="a TOML config file (e.g. configs/gpt2-small.toml)")
    pt.add_argument("--preset", help="a model preset (e.g. gpt2-tiny, bert-small, llama-small, t5-base)")
    pt.add_argument("--resume", help="a checkpoint or run directory to continue exactly")
    pt.set_defaults(func=_pretrain, takes_overrides=True)

    ft = sub.add_parser("finetune", help="fine-tune a model on a task: translation, summarization, classification",
                        description="Fine-tune (objective.name seq2seq or classify) on examples (--data.train: a "
                        ".jsonl/.tsv/.csv/.parquet file or a directory from `lmlab data get`) from --init, with the "
                        "pretraining loop (checkpoints, --resume, precision, torchrun). The best model by the "
                        "validation metric (finetune.metric) is kept in OUT_DIR/best. Override any key with "
                        "--section.key value.")
    ft.add_argument("--config", help="a TOML config file (e.g. configs/translate-de-en.toml)")
    ft.add_argument("--preset", help="a model preset, with --init none")
    ft.add_argument("--init", help="the starting weights: an lmlab checkpoint or run, a Hugging Face model "
                    "directory, or none (random [model] weights; set finetune.tokenizer)")
    ft.add_argument("--scratch", action="store_true", help="the configuration and tokenizer of --init with random "
                    "weights: the same run without pretraining")
    ft.add_argument("--resume", help="a checkpoint or run directory to continue exactly")
    ft.set_defaults(func=_finetune, takes_overrides=True)
    for train_parser in (pt, ft):
        train_parser.add_argument("--overwrite", action="store_true", help="a new run into a train.out_dir that "
                                  "holds another run: remove that run's checkpoints, logs and evaluations first "
                                  "(other files there stay)")

    ev = sub.add_parser("evaluate", help="score a fine-tuned model on a split of examples (BLEU, chrF, ROUGE, "
                        "accuracy, macro-F1)", description="Decode (greedy or beam search) or classify every example "
                        "of a split, write predictions.jsonl beside the references, and score them with sacrebleu "
                        "and rouge-score (or accuracy and macro-F1), beside the baselines: copy the source, its lead "
                        "sentence, the majority class.")
    ev.add_argument("checkpoint", help="a fine-tuned run (its best/ model) or checkpoint")
    ev.add_argument("--data", required=True, help="a directory of examples (train/valid/test files) or one file")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"])
    ev.add_argument("--num-beams", type=int, default=1)
    ev.add_argument("--max-new-tokens", type=int, default=0, help="default: the run's target length")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--limit", type=int, default=0, help="only the first N examples")
    ev.add_argument("--out", help="where predictions.jsonl and scores.json go (default: RUN/eval-SPLIT)")
    ev.add_argument("--json", action="store_true", help="print JSON for scripts")
    _dtype_option(ev)
    ev.set_defaults(func=_evaluate)

    for name, kind, what in (("translate", "seq2seq", "translate texts"), ("summarize", "seq2seq", "summarize texts"),
                             ("classify", "classify", "label texts (with the label's probability)")):
        tp = sub.add_parser(name, help=f"{what} with a fine-tuned model", description=f"{what[0].upper()}{what[1:]} "
                            "with a model fine-tuned by `lmlab finetune` (texts as arguments, --file lines, or "
                            "standard input), formatted as in fine-tuning.")
        tp.add_argument("checkpoint", help="a fine-tuned run (its best/ model) or checkpoint")
        tp.add_argument("text", nargs="*")
        tp.add_argument("--file", help="read texts from this file, one per line")
        if kind == "seq2seq":
            tp.add_argument("--num-beams", type=int, default=4)
            tp.add_argument("--max-new-tokens", type=int, default=0, help="default: the run's target length")
        tp.add_argument("--json", action="store_true", help="print JSON for scripts")
        _dtype_option(tp)
        tp.set_defaults(func=lambda args, kind=kind: _task_texts(args, kind))

    fm = sub.add_parser("fill-mask", help="predict the [MASK] tokens of texts with a masked LM",
                        description="Top-k tokens with probabilities at every mask token of each text (arguments, "
                        "--file lines, or standard input).")
    fm.add_argument("checkpoint", help="a checkpoint or run directory (lmlab or Hugging Face layout)")
    fm.add_argument("text", nargs="*", help="texts with one or more mask tokens")
    fm.add_argument("--file", help="read texts from this file, one per line")
    fm.add_argument("--top-k", type=int, default=5)
    fm.add_argument("--json", action="store_true", help="print JSON for scripts")
    fm.set_defaults(func=_fill_mask)

    gen = sub.add_parser("generate", help="continue prompts with a decoder, or transform them with an "
                         "encoder-decoder", description="Generate with a KV cache: sampling (temperature, "
                         "top-k, top-p), greedy (--temperature 0) or beam search (--num-beams). One prompt is "
                         "streamed token by token.")
    gen.add_argument("checkpoint", help="a checkpoint or run directory (lmlab or Hugging Face layout)")
    gen.add_argument("text", nargs="*", help="prompts (default: --file lines, or standard input)")
    _dtype_option(gen)
    gen.add_argument("--file", help="read prompts from this file, one per line")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    _sampling_options(gen, temperature=0.8, top_k=40)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--num-beams", type=int, default=1, help="beam search when > 1 (deterministic)")
    gen.add_argument("--keep-special-tokens", action="store_true", help="print every special token generated "
                     "(the sentinels of a span-corruption model, <extra_id_0>..., are printed in any case)")
    gen.add_argument("--json", action="store_true", help="print JSON for scripts (no streaming)")
    gen.add_argument("--chat", action="store_true", help="each prompt is a user's message: laid out by the chat "
                     "template, answered until the end of the assistant's turn (one turn; `lmlab chat` keeps a "
                     "conversation)")
    gen.add_argument("--system", help="with --chat: a system message before each prompt")
    gen.set_defaults(func=_generate)

    ch = sub.add_parser("chat", help="talk to an instruction-tuned decoder (one fine-tuned with sft)",
                        description="An interactive conversation through the model's chat template, the reply "
                        "streamed as it is written and the history kept (the oldest turns leave when it outgrows "
                        "the context). /reset forgets the conversation; /exit or Ctrl-D quits; Ctrl-C stops a "
                        "reply. Reads standard input, so messages can be piped in, one per line.")
    ch.add_argument("checkpoint", help="a checkpoint or run directory whose tokenizer has a chat template")
    _dtype_option(ch)
    ch.add_argument("--system", help="a system message that starts the conversation")
    ch.add_argument("--max-new-tokens", type=int, default=256, help="the longest reply")
    _sampling_options(ch, temperature=0.7, top_k=40)
    ch.add_argument("--repetition-penalty", type=float, default=1.0)
    ch.set_defaults(func=_chat)

    fi = sub.add_parser("infill", help="write the middle between a prefix and a suffix with a decoder trained with "
                        "the fim objective", description="Fill in the middle: build the prompt as the fim objective "
                        "trains on (<fim_prefix> prefix <fim_suffix> suffix <fim_middle>, or SPM), generate until the "
                        "end of the document and print the middle (--json: with prefix and suffix).")
    fi.add_argument("checkpoint", help="a checkpoint or run directory trained with objective.name = fim")
    fi.add_argument("--prefix", required=True, help="the text before the middle (may be empty)")
    fi.add_argument("--suffix", required=True, help="the text after the middle (may be empty)")
    fi.add_argument("--mode", choices=["psm", "spm"], help="the prompt's arrangement (default: the one the checkpoint "
                    "was trained on most, by its objective.fim_spm_rate)")
    fi.add_argument("--max-new-tokens", type=int, default=64)
    _sampling_options(fi, temperature=0.0, top_k=0)
    fi.add_argument("--json", action="store_true", help="print JSON for scripts")
    fi.set_defaults(func=_infill)

    sc = sub.add_parser("score", help="the log-probability of texts under a model",
                        description="log P(x) = sum_t log P(x_t | x_<t) for decoders (strided windows for long "
                        "texts), pseudo-log-likelihood for masked LMs, log P(target | text) for "
                        "encoder-decoders; or the perplexity of a file.")
    sc.add_argument("checkpoint", help="a checkpoint or run directory (lmlab or Hugging Face layout)")
    sc.add_argument("text", nargs="*", help="texts (default: --file lines, or standard input)")
    _dtype_option(sc)
    sc.add_argument("--file", help="read texts from this file, one per line")
    sc.add_argument("--target", help="encoder-decoders: the target text to score given each text")
    sc.add_argument("--perplexity", action="store_true", help="the perplexity of --file as a whole")
    sc.add_argument("--unit", choices=["line", "document"], default="line",
                    help="--perplexity: texts are lines, or blank-line-separated documents")
    sc.add_argument("--max-length", type=int, default=None, help="decoders: window length (default: context)")
    sc.add_argument("--stride", type=int, default=None, help="decoders: window stride (default: half)")
    sc.add_argument("--bos", action="store_true", help="decoders: put the tokenizer's BOS token first, so the "
                    "text's first token is scored too (without it the first token is context only)")
    sc.add_argument("--json", action="store_true", help="print JSON for scripts (with per-token log-probs)")
    sc.set_defaults(func=_score)

    data = sub.add_parser("data", help="task datasets").add_subparsers(dest="data_command", required=True,
                                                                     metavar="SUBCOMMAND")
    dg = data.add_parser("get", help="download and build a real task dataset from Debian's archive",
                         description="Fetch (from Debian's archive, through a private apt configuration; raw "
                         "downloads cached under $LMLAB_CACHE or ~/.cache/lmlab/sources) and build a dataset: "
                         "train/valid/test.jsonl split by hash, manifest.json and README.md. Sources: "
                         "debian-handbook, debian-descriptions (translation), debian-summaries (summarization), "
                         "debian-sections (classification), debian-instructions (instruction tuning, sft), "
                         "debian-preferences (preference pairs, dpo).")
    dg.add_argument("name", metavar="NAME", help="debian-handbook, debian-descriptions, debian-summaries, "
                    "debian-sections, debian-instructions or debian-preferences")
    dg.add_argument("--out", required=True, help="output directory (must not exist, or be empty)")
    dg.add_argument("--pair", help="translation sources: SOURCE-TARGET languages, e.g. de-en, fr-en, en-de "
                    "(default: de-en)")
    dg.add_argument("--unit", help="debian-descriptions: line, paragraph or both (default: both)")
    dg.add_argument("--min-count", type=int, help="debian-sections: keep the sections with at least this many "
                    "examples (default: 200)")
    dg.add_argument("--tasks", help="debian-instructions: the instructions, describe and/or section, comma-separated "
                    "(default: describe,section)")
    dg.add_argument("--max-chars", type=int, help="debian-instructions, debian-preferences: leave out long "
                    "descriptions longer than this many characters, 0 for no limit (default: 1000)")
    dg.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    dg.set_defaults(func=_data_get)

    cp = sub.add_parser("compare", help="compare pretraining objectives under equal compute, judged downstream",
                        description="Pretrain each objective/architecture of --config to the same FLOP budget for "
                        "each seed, fine-tune every row (and a no-pretraining row per architecture) on each task, "
                        "evaluate on the test split and write OUT/report.md. Each cell is an ordinary run "
                        "directory under OUT: a finished one is skipped on rerun, an interrupted one resumed.")
    cp.add_argument("--config", required=True, help="a compare config (e.g. configs/compare-small.toml)")
    cp.add_argument("--out", required=True, help="the directory of the cells and the report")
    cp.add_argument("--plan", action="store_true", help="print every cell as the lmlab command that runs it (for "
                    "a job array) and each row's parameters; run nothing")
    cp.set_defaults(func=_compare)

    cv = sub.add_parser("convert", help="convert checkpoints between Hugging Face and lmlab layouts",
                        description="from-hf: a local Hugging Face model directory (BERT, RoBERTa, GPT-2, Llama, "
                        "T5, BART) to an lmlab checkpoint; to-hf: an lmlab checkpoint to a directory that "
                        "transformers' Auto* classes load. Logits are kept exactly (tested against transformers).")
    cv.add_argument("direction", choices=["from-hf", "to-hf"])
    cv.add_argument("src", help="the directory to read")
    cv.add_argument("dst", help="the directory to write (must not exist, or be empty)")
    cv.add_argument("--allow-pickle", action="store_true",
                    help="from-hf: also read pytorch_model.bin (torch.load with weights_only=True)")
    cv.set_defaults(func=_convert)

    lora = sub.add_parser("lora", help="LoRA adapters").add_subparsers(dest="lora_command", required=True,
                                                                      metavar="SUBCOMMAND")
    lm = lora.add_parser("merge", help="fold a LoRA run's adapters into the weights: an ordinary checkpoint",
                         description="Load the base model of a run fine-tuned with finetune.lora (its best/ model, "
                         "else its newest checkpoint; or a checkpoint), fold the adapters into its weights "
                         "(W + alpha/r B A) and write OUT, an lmlab checkpoint that gives the same logits.")
    lm.add_argument("run", help="a LoRA run or checkpoint directory")
    lm.add_argument("out", help="the checkpoint directory to write (must not exist, or be empty)")
    lm.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    lm.set_defaults(func=_lora_merge)
    _show_defaults(p)
    return p


class _Parser(argparse.ArgumentParser):
    """A command's parser that takes its texts (a ``nargs="*"`` positional) wherever they stand among the options,
    ``lmlab generate RUN --temperature 0 "Once upon"`` as ``lmlab generate RUN "Once upon" --temperature 0``;
    argparse alone gives the texts to the first positionals' turn, which ends at the first option."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or not any(a.nargs in ("*", "+") and not a.option_strings for a in self._actions) \
                or any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default, except where there is none to tell (None, a flag's False) or
    the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help or ""
        if not _has_default(action) or "default" in help:
            return action.help
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's --help shows the defaults, also of options that have no help text of their own."""
    parser.formatter_class = _DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)
        elif action.help is None and _has_default(action) and action.option_strings:
            action.help = "(default: %(default)s)"


def _has_default(action: argparse.Action) -> bool:
    return action.default is not None and action.default is not False and action.default != argparse.SUPPRESS


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if getattr(args, "takes_overrides", False):
            args.func(args, extra)
        else:
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.func(args)
    except LmlabError as e:
        print(f"lmlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`lmlab generate ... | head -c 5`): stop quietly, as Unix tools do
        _silence_stdout()
        return 128 + 13  # as a process killed by SIGPIPE
    return 0


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that Python's flush at exit does not report the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured output)
        pass


if __name__ == "__main__":
    sys.exit(main())
