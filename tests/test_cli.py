"""The ``lmlab`` command end to end: tokenizer train -> prepare -> pretrain -> --resume -> use; errors exit 2 (every
bad input: tests/reliability/test_bad_input.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from lmlab.cli import build_parser, main

TRAIN = ["--data.seq_len", "32", "--train.batch_size", "4", "--train.max_steps", "4", "--train.save_every", "2",
         "--train.eval_every", "2", "--train.eval_batches", "1", "--train.progress", "false",
         "--train.peak_flops", "1e11"]


@pytest.fixture(scope="module")
def cli_shards(tmp_path_factory, corpus_file):
    root = tmp_path_factory.mktemp("cli")
    assert main(["tokenizer", "train", str(corpus_file), "--out", str(root / "tok"), "--vocab-size", "300"]) == 0
    assert main(["prepare", str(corpus_file), "--tokenizer", str(root / "tok"), "--out", str(root / "shards"),
                 "--val-fraction", "0.05", "--quiet", "--workers", "1"]) == 0
    return root / "shards"


def test_pretrain_resume_generate(cli_shards, tmp_path, capsys):
    run = tmp_path / "clm"
    assert main(["pretrain", "--preset", "gpt2-tiny", "--data.path", str(cli_shards), "--train.out_dir", str(run),
                 *TRAIN]) == 0
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000002", "step-000004"]
    # --resume alone continues with the run's own configuration; overrides extend it
    assert main(["pretrain", "--resume", str(run), "--train.max_steps", "6"]) == 0
    assert (run / "step-000006").is_dir()
    state = json.loads((run / "step-000006" / "training_state.json").read_text())
    assert state["step"] == 6 and state["config"]["train"]["max_steps"] == 6
    capsys.readouterr()
    assert main(["generate", str(run), "the quick", "--max-new-tokens", "5", "--seed", "1"]) == 0  # streamed
    assert capsys.readouterr().out.startswith("the quick")


def test_pretrain_mlm_and_fill_mask(cli_shards, tmp_path, capsys):
    run = tmp_path / "mlm"
    assert main(["pretrain", "--preset", "bert-tiny", "--objective.name", "mlm", "--data.path", str(cli_shards),
                 "--train.out_dir", str(run), *TRAIN]) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "the quick brown"]) == 2  # an encoder: the error, and nothing before it
    captured = capsys.readouterr()
    assert captured.out == "" and "needs a decoder" in captured.err
    assert main(["fill-mask", str(run), "the quick [MASK] fox", "--top-k", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "the quick [MASK] fox" and out[1].startswith("  mask 0:") and len(out) == 2
    assert main(["fill-mask", str(run), "the [MASK] brown [MASK]", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["the [MASK] brown [MASK]"]
    assert len(result) == 2 and all(len(m) == 5 and 0 < m[0]["score"] <= 1 for m in result)
    assert main(["score", str(run), "the quick brown fox", "--json"]) == 0  # pseudo-log-likelihood
    (row,) = json.loads(capsys.readouterr().out)
    assert row["log_prob"] < 0 and row["num_tokens"] == len(row["token_log_probs"]) > 0


def test_generate_and_score_a_causal_lm(cli_shards, tmp_path, capsys, monkeypatch):
    run = tmp_path / "clm"
    assert main(["pretrain", "--preset", "gpt2-tiny", "--data.path", str(cli_shards), "--train.out_dir", str(run),
                 *TRAIN]) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "the quick", "the lazy dog", "--temperature", "0", "--max-new-tokens", "6",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["prompt"] for r in rows] == ["the quick", "the lazy dog"]
    assert all(r["generated_text"].startswith(r["prompt"]) for r in rows)
    assert main(["generate", str(run), "the quick", "--num-beams", "3", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("the quick")
    monkeypatch.setattr("sys.stdin", io.StringIO("the quick brown fox\n\nover the lazy dog\n"))
    assert main(["score", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and all(r["log_prob"] < 0 and r["perplexity"] > 1 for r in rows)
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox\nover the lazy dog\n")
    assert main(["score", str(run), "--file", str(text), "--perplexity"]) == 0
    assert "perplexity" in capsys.readouterr().out
    for value in ("-1", "nan", "inf"):  # an option argparse checks: it names it and exits 2 (the other bad
        # inputs are in tests/reliability/test_bad_input.py)
        with pytest.raises(SystemExit) as e:
            main(["generate", str(run), "the", "--temperature", value])
        assert e.value.code == 2 and "--temperature" in capsys.readouterr().err
    # a decoder's first token is context: the command says so, and --bos scores it too
    assert main(["score", str(run), "the quick brown fox", "--json"]) == 0
    captured = capsys.readouterr()
    plain = json.loads(captured.out)[0]
    assert "first token is context" in captured.err
    assert main(["score", str(run), "the quick brown fox", "--json", "--bos"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["num_tokens"] == plain["num_tokens"] + 1 and "note" not in captured.err


def test_help_shows_defaults_and_prepare_a_summary(cli_shards, corpus_file, tmp_path, capsys):
    parser = build_parser()
    for argv, shown in ((["generate"], ["(default: 0.8)", "(default: 50)"]),
                        (["tokenizer", "train"], ["(default: 8192)", "(default: bpe)"]),
                        (["prepare"], ["(default: 0.01)"])):
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--help"])
        out = capsys.readouterr().out
        assert all(s in out for s in shown), (argv, out)
    assert main(["prepare", str(corpus_file), "--tokenizer", str(cli_shards), "--out", str(tmp_path / "s"),
                 "--quiet", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 's'}: train ") and "val " in out and len(out.splitlines()) == 1


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = [["demo"], ["tokenizer"], ["tokenizer", "train"], ["prepare"], ["pretrain"], ["fill-mask"],
                ["generate"], ["chat"], ["score"], ["convert"]]
    for argv in [[], *commands]:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([*argv, "--help"])
        assert e.value.code == 0
        assert "usage: lmlab" in capsys.readouterr().out


def test_texts_may_follow_the_options():
    """A command's texts are taken wherever they stand among its options (argparse alone stops them at the first
    option), and pretraining's --section.key overrides still pass through."""
    parser = build_parser()
    for argv in (["generate", "RUN", "--temperature", "0", "a b", "c"], ["generate", "RUN", "a b", "--temperature",
                                                                          "0", "c"]):
        args, extra = parser.parse_known_args(argv)
        assert (args.checkpoint, args.text, args.temperature, extra) == ("RUN", ["a b", "c"], 0.0, [])
    args, extra = parser.parse_known_args(["pretrain", "--preset", "gpt2-tiny", "--train.lr", "1e-3"])
    assert args.preset == "gpt2-tiny" and extra == ["--train.lr", "1e-3"]


def test_no_traceback_from_the_installed_command(tmp_path):
    """The real process: a user mistake prints one line and exits 2."""
    proc = subprocess.run([sys.executable, "-m", "lmlab", "prepare", str(tmp_path / "missing"), "--tokenizer",
                           "x", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("lmlab: error:")
    top = subprocess.run([sys.executable, "-m", "lmlab", "--help"], capture_output=True, text=True)
    assert top.returncode == 0
    for command in ("demo", "tokenizer", "prepare", "pretrain", "fill-mask", "generate", "score", "convert"):
        assert command in top.stdout


def test_a_closed_pipe_ends_quietly(corpus_file, tmp_path):
    """`lmlab ... | head -c 5`: the reader goes away; lmlab exits like a Unix tool, without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "tokenizer", "train", str(corpus_file), "--out",
                             str(tmp_path / "tok"), "--vocab-size", "300"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command prints anything
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
