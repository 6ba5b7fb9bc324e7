"""Chat: a decoder tuned with sft on conversations (the digit-reversal task) answered through its chat template,
stopping at ChatML's <|im_end|>; the conversation kept, trimmed to the context, and the `lmlab chat` REPL."""

from __future__ import annotations

import io
import json

import pytest
import torch

from lmlab.chat_template import render, template_variables
from lmlab.cli import main
from lmlab.config import load_config
from lmlab.infer import InferenceError, generate
from lmlab.infer.chat import Chat, stop_ids
from lmlab.train import load_model
from lmlab.train.finetune import finetune

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chat_run(task_tokenizer, sft_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("chat") / "run"
    finetune(load_config(None, {
        "preset": "llama-tiny", "objective": {"name": "sft"},
        "data": {"train": str(sft_data), "seq_len": "32"},
        "finetune": {"init": "none", "tokenizer": str(task_tokenizer), "metric": "loss"},
        "train": {"out_dir": str(out), "max_steps": "700", "batch_size": "32", "lr": "5e-3", "eval_every": "700",
                  "eval_batches": "2", "save_every": "700", "warmup_steps": "20", "log_every": "100",
                  "progress": "false", "weight_decay": "0.0"}}))
    return out


def _valid(sft_data):
    rows = [json.loads(line) for line in (sft_data / "valid.jsonl").read_text().splitlines()]
    return [r["messages"] for r in rows if "messages" in r]


def test_a_reply_ends_at_the_end_of_turn_token(chat_run, sft_data):
    """Greedy replies reverse the digits; each stops at <|im_end|> (not at the token limit) and equals generate()
    on apply_chat_template's prompt, cut there."""
    from lmlab import AutoTokenizer

    model, tok = load_model(chat_run, for_inference=True)
    end = tok.token_to_id("<|im_end|>")
    assert stop_ids(tok) == [tok.eos_id, end]
    hf_tok = AutoTokenizer.from_pretrained(chat_run)
    right = 0
    conversations = _valid(sft_data)
    for messages in conversations:
        chat = Chat(model, tok, max_new_tokens=20, do_sample=False)
        made: list[int] = []
        reply = chat.send(messages[0]["content"], streamer=lambda column, made=made: made.append(int(column[0])))
        right += reply == messages[1]["content"]
        assert made[-1] == end and len(made) < 20, made
        prompt = hf_tok.apply_chat_template(messages[:1], add_generation_prompt=True, return_dict=False)
        plain = generate(model, torch.tensor([prompt]), max_new_tokens=20, eos_token_id=[tok.eos_id, end])[0]
        assert plain[len(prompt):].tolist() == made
        assert chat.messages == [messages[0], {"role": "assistant", "content": reply}]
    assert right / len(conversations) >= 0.8, right  # 44-50 of 50 over 11 runs of seeds and thread counts


def test_the_conversation_is_kept_and_trimmed_to_the_context(chat_run):
    """Each turn's prompt holds the earlier turns; when they outgrow the context the oldest exchanges leave (the
    system message stays), so a long conversation goes on; /reset's method forgets it."""
    model, tok = load_model(chat_run, for_inference=True)
    chat = Chat(model, tok, system="digits", max_new_tokens=12, do_sample=False)
    context = model.config.max_seq_len
    for i in range(40):
        chat.send(" ".join(str((i + j) % 10) for j in range(5)))
        ids, room = chat.prompt_ids(chat.messages)
        assert len(ids) + room <= context
    assert len(chat.messages) == 81 and chat.messages[0] == {"role": "system", "content": "digits"}
    kept, _ = chat.prompt_ids(chat.messages)

    def prompt(messages):
        return tok.encode(render(tok.chat_template, messages, add_generation_prompt=True, **template_variables(tok)))

    system, turns = chat.messages[:1], chat.messages[1:]
    assert len(prompt(chat.messages)) > context  # the whole conversation no longer fits
    # the kept prompt is the system message and the most recent exchanges that leave room for a reply
    n = next(n for n in range(len(turns), 0, -2) if prompt(system + turns[-n:]) == kept)
    assert 2 <= n < len(turns)
    assert len(prompt(system + turns[-n - 2:])) + chat.max_new_tokens > context
    chat.reset()
    assert chat.messages == [{"role": "system", "content": "digits"}]
    with pytest.raises(InferenceError, match="context"):
        chat.send(" ".join(["1"] * (context + 5)))


def test_chat_repl_and_generate_chat(chat_run, sft_data, monkeypatch, capsys):
    """`lmlab chat` reads messages from standard input (/reset, an unknown command, /exit) and streams each
    reply; `lmlab generate --chat` answers one turn per prompt."""
    asked = [m[0]["content"] for m in _valid(sft_data)[:2]]
    # the replies Chat gives (the first test proves them generate()'s); a model trained on another CPU may
    # answer a digit differently, so the dataset's answers are not the reference
    model, tok = load_model(chat_run, for_inference=True)
    replies = [Chat(model, tok, do_sample=False).send(question) for question in asked]
    lines = [asked[0], "/reset", "/nope", asked[1], "/exit", "1 2 3"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", str(chat_run), "--temperature", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [replies[0], "(conversation forgotten)",
                   "unknown command /nope: /reset forgets the conversation, /exit quits", replies[1]]
    assert main(["generate", str(chat_run), *asked, "--chat", "--temperature", "0", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["generated_text"] for r in results] == replies

    def sampled(command, seed):  # sampling options as generate's: a seed draws the same reply again
        monkeypatch.setattr("sys.stdin", io.StringIO(asked[0] + "\n"))
        assert main([command, str(chat_run), *([asked[0], "--chat"] if command == "generate" else []),
                     "--temperature", "4", "--top-k", "20", "--max-new-tokens", "6", "--seed", str(seed)]) == 0
        return capsys.readouterr().out

    for command in ("chat", "generate"):
        draws = [sampled(command, seed) for seed in (1, 1, 2, 3)]
        assert draws[0] == draws[1] and len(set(draws)) > 1, draws


def test_chat_needs_a_template_and_a_decoder(chat_run, task_tokenizer, tmp_path, capsys):
    from lmlab.model import build_model
    from lmlab.tokenizer import Tokenizer
    from lmlab.train.checkpoint import save_model_dir

    tok = Tokenizer.load(task_tokenizer)
    cfg = load_config(None, {"preset": "gpt2-tiny"})
    model = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "vocab_size": tok.vocab_size}))
    (tmp_path / "plain").mkdir()
    save_model_dir(tmp_path / "plain", model, tok)
    assert main(["chat", str(tmp_path / "plain")]) == 2
    assert "no chat template" in capsys.readouterr().err
    _, chat_tok = load_model(chat_run)
    cfg = load_config(None, {"preset": "bert-tiny"})
    encoder = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "vocab_size": chat_tok.vocab_size}))
    with pytest.raises(InferenceError, match="chat needs a decoder"):
        Chat(encoder, chat_tok)
    assert main(["generate", str(chat_run), "--system", "be brief", "1 2 3"]) == 2
    assert "pass --chat as well" in capsys.readouterr().err
