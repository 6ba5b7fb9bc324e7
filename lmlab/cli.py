"""The ``lmlab`` command: a thin skin over the Python API. Each subcommand is one library call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmlab.errors import LmlabError


def _tokenizer_train(args: argparse.Namespace) -> None:
    from lmlab.tokenizer import train_tokenizer

    tok = train_tokenizer(args.files, kind=args.kind, vocab_size=args.vocab_size,
                          min_frequency=args.min_frequency, sentinels=args.sentinels, lowercase=args.lowercase)
    tok.save(args.out)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} tokens -> {Path(args.out) / 'tokenizer.json'}")


def _prepare(args: argparse.Namespace) -> None:
    from lmlab.data import prepare
    from lmlab.tokenizer import Tokenizer

    manifest = prepare(args.corpus, Tokenizer.load(args.tokenizer), args.out, val_fraction=args.val_fraction,
                       num_workers=args.workers, progress=not args.quiet)
    print(json.dumps(manifest.to_dict(), indent=2))


def _pretrain(args: argparse.Namespace, overrides: list[str]) -> None:
    from lmlab.config import config_from_dict, load_config, parse_overrides
    from lmlab.objectives import check_objective
    from lmlab.train import config_from_checkpoint, pretrain
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
        result = pretrain(cfg, resume=args.resume)
    finally:
        teardown()
    if result.interrupted:
        print(f"interrupted; saved step {result.step} to {result.checkpoint}; continue with --resume "
              f"{result.out_dir}", file=sys.stderr)
        raise KeyboardInterrupt
    print(f"done; saved step {result.step} to {result.checkpoint}")


def _demo(args: argparse.Namespace, overrides: list[str]) -> None:
    from lmlab.demo import run_demo

    run_demo(corpus=args.corpus, out_dir=args.out, steps=args.steps, overrides=overrides)


def _fill_mask(args: argparse.Namespace) -> None:
    from lmlab.infer import fill_mask
    from lmlab.train import load_model

    model, tok = load_model(args.checkpoint)
    for i, candidates in enumerate(fill_mask(model, tok, args.text, top_k=args.top_k)):
        print(f"mask {i}: " + "  ".join(f"{t!r} {p:.3f}" for t, p in candidates))


def _generate(args: argparse.Namespace) -> None:
    from lmlab.infer import sample
    from lmlab.train import load_model

    model, tok = load_model(args.checkpoint)
    print(sample(model, tok, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_k=args.top_k, seed=args.seed))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmlab", description="Train Transformer language models where the "
                                "training objective is the thing you choose.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a tokenizer, a causal LM and a masked LM on a built-in corpus, "
                          "then use them", description="Train a tokenizer and two small models (causal LM "
                          "decoder, masked LM encoder) on the Python standard library's docstrings (or "
                          "--corpus), then show fill-mask and generation. Extra --section.key value overrides "
                          "apply to both models.")
    demo.add_argument("--corpus", help="a text/jsonl file or directory to use instead of the built-in corpus")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--steps", type=int, default=None, help="training steps per model (default: the configs')")
    demo.set_defaults(func=_demo, takes_overrides=True)

    tok = sub.add_parser("tokenizer", help="train a tokenizer").add_subparsers(dest="tok_command", required=True,
                                                                               metavar="SUBCOMMAND")
    tt = tok.add_parser("train", help="train a byte-level BPE, WordPiece or Unigram tokenizer on text files",
                        description="Train a tokenizer with the Hugging Face `tokenizers` library and save it "
                        "as OUT/tokenizer.json.")
    tt.add_argument("files", nargs="+", help="text files (.txt, .jsonl) or directories")
    tt.add_argument("--out", required=True, help="directory to write tokenizer.json to")
    tt.add_argument("--kind", choices=["bpe", "wordpiece", "unigram"], default="bpe")
    tt.add_argument("--vocab-size", type=int, default=8192)
    tt.add_argument("--min-frequency", type=int, default=2)
    tt.add_argument("--sentinels", type=int, default=0, help="add <extra_id_0>..<extra_id_{N-1}> (T5 style)")
    tt.add_argument("--lowercase", action="store_true")
    tt.set_defaults(func=_tokenizer_train)

    pr = sub.add_parser("prepare", help="tokenize a corpus into memory-mapped token shards",
                        description="Tokenize a corpus (.txt, .jsonl or a directory) in parallel and write "
                        "memory-mapped token shards, document offsets and a manifest, with a validation split.")
    pr.add_argument("corpus", help="a .txt or .jsonl file, or a directory of them")
    pr.add_argument("--tokenizer", required=True, help="tokenizer.json, a directory holding it, or a vocab.txt")
    pr.add_argument("--out", required=True, help="output directory for the shards")
    pr.add_argument("--val-fraction", type=float, default=0.01)
    pr.add_argument("--workers", type=int, default=None, help="tokenizer worker processes (default: all cores)")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_prepare)

    pt = sub.add_parser("pretrain", help="train a model with a self-supervised objective",
                        description="Train as a TOML config describes; override any key with "
                        "--section.key value (e.g. --train.max_steps 200). Runs unchanged under torchrun.")
    pt.add_argument("--config", help="a TOML config file (e.g. configs/gpt2-small.toml)")
    pt.add_argument("--preset", help="a model preset (e.g. gpt2-tiny, bert-small, llama-small, t5-base)")
    pt.add_argument("--resume", help="a checkpoint or run directory to continue exactly")
    pt.set_defaults(func=_pretrain, takes_overrides=True)

    fm = sub.add_parser("fill-mask", help="predict the [MASK] tokens of a text with a masked LM")
    fm.add_argument("checkpoint")
    fm.add_argument("text")
    fm.add_argument("--top-k", type=int, default=5)
    fm.set_defaults(func=_fill_mask)

    gen = sub.add_parser("generate", help="sample a continuation of a prompt from a causal LM")
    gen.add_argument("checkpoint")
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=40)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=_generate)
    return p


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
