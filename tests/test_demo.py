"""``lmlab demo`` end to end on a user's corpus, shortened: every stage runs and reports."""

from lmlab.cli import main


def test_demo_on_a_user_corpus(docs, tmp_path, capsys):
    import csv

    corpus = tmp_path / "corpus.csv"  # rows with their text in "body" (--data.text_field)
    with open(corpus, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "body"], *enumerate(docs)])
    argv = ["demo", "--corpus", str(corpus), "--out", str(tmp_path / "demo"), "--steps", "2",
            "--data.text_field=body", "--data.seq_len=32", "--train.batch_size=2", "--train.eval_batches=1",
            "--train.progress=false", "--train.peak_flops=1e11"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for part in ("[1/4]", "[4/4]", "unigram", "fill-mask", "sampled continuations", "demo finished"):
        assert part in out
    for name in ("clm", "mlm"):
        run = tmp_path / "demo" / name
        assert (run / "step-000002" / "model.safetensors").is_file()
        assert (run / "loss.png").is_file() and (run / "metrics.jsonl").is_file()
