"""Infill: the prompt is the fim objective's document cut before the middle, and a tiny model trained with fim in
the test fills the middle (Python, pipeline and `lmlab infill`)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lmlab
from lmlab.config import load_config, model_preset
from lmlab.data import prepare
from lmlab.infer import InferenceError, generate
from lmlab.infer.infill import infill, infill_prompt, trained_mode
from lmlab.model import build_model
from lmlab.objectives import FillInTheMiddle, check_objective, objective_tokenizer
from lmlab.tokenizer import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = "abcdefghijklmnop"  # one character a token: the middle between a prefix and a suffix of it is one string


@pytest.fixture(scope="module")
def fim_tokenizer(tokenizer):
    return objective_tokenizer(load_config(None, {"preset": "gpt2-tiny", "objective": {"name": "fim"}}), tokenizer)


@pytest.mark.parametrize("spm", [False, True], ids=["psm", "spm"])
def test_the_prompt_is_the_objectives_document_cut_before_the_middle(fim_tokenizer, monkeypatch, spm):
    doc, (prefix, middle, suffix) = "def add(a, b):\n    return a + b", ("def add(a, b):\n    ", "return a", " + b")
    monkeypatch.setattr("lmlab.objectives.fim.split_document", lambda text, g: (prefix, middle, suffix))
    sep = fim_tokenizer.eos_id
    objective = FillInTheMiddle(fim_tokenizer, [sep], fim_tokenizer.pad_id, fim_rate=1.0, spm_rate=float(spm))
    row = fim_tokenizer.encode(doc) + [sep]
    tokens = torch.tensor([row + [sep] * 8])  # room for the sentinels
    out, segments = objective.rearrange(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(0))
    trained = out[0][segments[0] == 0].tolist()  # the document as the model is trained on it
    prompt = infill_prompt(fim_tokenizer, prefix, suffix, "spm" if spm else "psm")
    assert trained == prompt + fim_tokenizer.encode(middle) + [sep]


@pytest.fixture(scope="module")
def decoder(fim_tokenizer):
    torch.manual_seed(0)
    return build_model(model_preset("gpt2-tiny", vocab_size=fim_tokenizer.vocab_size)).eval()


def test_infill_is_greedy_generation_from_the_prompt_until_the_document_ends(decoder, fim_tokenizer):
    prefixes, suffixes = ["the quick ", "a", ""], [" fox", "", "dog."]
    middles = infill(decoder, fim_tokenizer, prefixes, suffixes, max_new_tokens=6)
    for prefix, suffix, middle in zip(prefixes, suffixes, middles, strict=True):
        prompt = infill_prompt(fim_tokenizer, prefix, suffix)
        new = generate(decoder, torch.tensor([prompt]), max_new_tokens=6)[0, len(prompt):].tolist()
        new = new[:new.index(fim_tokenizer.eos_id)] if fim_tokenizer.eos_id in new else new
        assert middle == fim_tokenizer.decode(new) == infill(decoder, fim_tokenizer, prefix, suffix, max_new_tokens=6)


def test_bad_infill_calls_are_inference_errors(decoder, fim_tokenizer, tokenizer, models):
    with pytest.raises(InferenceError, match="no <fim_prefix>, <fim_middle>, <fim_suffix> token: infill needs a "
                       "decoder trained with the fill-in-the-middle objective"):
        infill(models["decoder"], tokenizer, "a", "b")  # the tokenizer of a model trained without fim
    with pytest.raises(InferenceError, match="mode must be one of psm, spm"):
        infill(decoder, fim_tokenizer, "a", "b", mode="pms")
    with pytest.raises(InferenceError, match="lists of prefixes and suffixes of the same length"):
        infill(decoder, fim_tokenizer, ["a", "b"], ["c"])
    with pytest.raises(InferenceError, match="infill needs a decoder"):
        infill(models["encoder"], fim_tokenizer, "a", "b")
    with pytest.raises(InferenceError, match="context"):
        infill(decoder, fim_tokenizer, "a", "b", max_new_tokens=10_000)


@pytest.fixture(scope="module")
def fim_run(tmp_path_factory):
    """A tiny decoder trained with fim (PSM only) on one document repeated: 300 steps, a few seconds."""
    tmp = tmp_path_factory.mktemp("fim")
    tok = train_tokenizer([DOC] * 40, kind="bpe", vocab_size=300, min_frequency=10**9)  # no merges
    (tmp / "corpus.txt").write_text("\n\n".join([DOC] * 40))
    prepare(tmp / "corpus.txt", tok, tmp / "shards", valid_size=4, progress=False)
    cfg = load_config(None, {
        "preset": "gpt2-tiny", "data": {"path": str(tmp / "shards"), "seq_len": 48},
        "objective": {"name": "fim", "fim_rate": 1.0, "fim_spm_rate": 0.0},
        "train": {"out_dir": str(tmp / "run"), "max_steps": 300, "batch_size": 8, "lr": 3e-3, "warmup_steps": 10,
                  "eval_every": 300, "eval_batches": 1, "save_every": 300, "progress": False, "peak_flops": 1e11}})
    check_objective(cfg)
    lmlab.pretrain(cfg)
    return tmp / "run"


def test_a_tiny_model_trained_with_fim_fills_the_middle(fim_run):
    fill = lmlab.pipeline("infill", model=fim_run)
    assert fill.defaults["mode"] == "psm"  # read from the run's objective.fim_spm_rate
    cases = [(DOC[:a], DOC[b:]) for a in range(1, len(DOC)) for b in range(a, len(DOC) + 1)]
    out = fill([p for p, _ in cases], [s for _, s in cases])
    wrong = [(o["filled_text"], o["middle"]) for o in out if o["filled_text"] != DOC]
    assert len(wrong) <= 0.05 * len(cases), wrong  # all 135 right here; a margin for another CPU's rounding
    model, tokenizer = lmlab.load(fim_run)
    middle = lmlab.infill(model, tokenizer, "abc", "hijklmnop")  # "defg" here
    assert fill("abc", "hijklmnop") == {"middle": middle, "filled_text": "abc" + middle + "hijklmnop"}


def test_cli_infill(fim_run, tmp_path, tokenizer, models, capsys):
    from lmlab.cli import main
    from lmlab.train import save_model_dir

    model, tok = lmlab.load(fim_run)  # the CLI prints what lmlab.infill gives ("fghij" and "defg" here)
    assert main(["infill", str(fim_run), "--prefix", "abcde", "--suffix", "klmnop"]) == 0
    assert capsys.readouterr().out == lmlab.infill(model, tok, "abcde", "klmnop") + "\n"
    assert main(["infill", str(fim_run), "--prefix", "abc", "--suffix", "hijklmnop", "--json"]) == 0
    middle = lmlab.infill(model, tok, "abc", "hijklmnop")
    assert json.loads(capsys.readouterr().out) == {"prefix": "abc", "suffix": "hijklmnop", "mode": "psm",
                                                   "middle": middle, "filled_text": "abc" + middle + "hijklmnop"}
    plain = tmp_path / "clm"  # a decoder whose tokenizer has no FIM tokens
    plain.mkdir()
    save_model_dir(plain, models["decoder"], tokenizer)
    assert main(["infill", str(plain), "--prefix", "a", "--suffix", "b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error: the tokenizer has no <fim_prefix>") and "Traceback" not in err


def test_the_mode_is_the_one_the_checkpoint_was_trained_on_most(fim_run, tmp_path):
    from lmlab.train.checkpoint import STATE, resolve_model_dir

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(resolve_model_dir(fim_run), checkpoint)
    state = json.loads((checkpoint / STATE).read_text())
    for rate, mode in ((0.0, "psm"), (0.5, "psm"), (0.9, "spm"), (1.0, "spm")):
        state["config"]["objective"]["fim_spm_rate"] = rate
        (checkpoint / STATE).write_text(json.dumps(state))
        assert trained_mode(checkpoint) == mode
    (checkpoint / STATE).unlink()  # no training state (an exported model): PSM
    assert trained_mode(checkpoint) == "psm"
