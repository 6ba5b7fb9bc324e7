"""Chat templates: rendered as transformers renders them, kept with the tokenizer, and the assistant's spans."""

from __future__ import annotations

import json

import pytest
import tokenizers

from lmlab import AutoTokenizer
from lmlab.chat_template import CHATML_TOKENS, DEFAULT_CHAT_TEMPLATE, assistant_spans, render
from lmlab.errors import TokenizerError
from lmlab.tokenizer import Tokenizer

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse 1 2 3"},
        {"role": "assistant", "content": "3 2 1"}, {"role": "user", "content": "and 4 5?"},
        {"role": "assistant", "content": "5 4"}]
# Llama-2's template (shortened): a system prompt folded into the first turn, bos/eos tokens, raise_exception
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}")
# whitespace control as Hugging Face templates write it (trim_blocks / lstrip_blocks matter), and tojson
ZEPHYR = """{% for message in messages %}
    {% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] | tojson + eos_token }}
    {% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""


def _with_template(tokenizer: Tokenizer, template: str | None) -> Tokenizer:
    return Tokenizer(tokenizer.tok, tokenizer.roles, tokenizer.additional_special_tokens, template)


def test_default_template_renders_chatml():
    assert render(DEFAULT_CHAT_TEMPLATE, CHAT[1:3]) == \
        "<|im_start|>user\nReverse 1 2 3<|im_end|>\n<|im_start|>assistant\n3 2 1<|im_end|>\n"
    assert render(DEFAULT_CHAT_TEMPLATE, CHAT[1:2], add_generation_prompt=True) == \
        "<|im_start|>user\nReverse 1 2 3<|im_end|>\n<|im_start|>assistant\n"


def test_apply_chat_template(tokenizer):
    tok = AutoTokenizer(_with_template(tokenizer, LLAMA2))
    text = tok.apply_chat_template(CHAT[:3], tokenize=False)
    assert text == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nReverse 1 2 3 [/INST] 3 2 1 </s>"
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nReverse 1 2 3 [/INST]"  # this template adds none
    chatml = AutoTokenizer(_with_template(tokenizer, DEFAULT_CHAT_TEMPLATE))
    assert chatml.apply_chat_template(CHAT[1:2], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")
    ids = tok.apply_chat_template(CHAT[:3], return_dict=False)
    assert ids == tokenizer.encode(text) and tok.apply_chat_template(CHAT[:3])["input_ids"] == ids
    batch = tok.apply_chat_template([CHAT[:3], CHAT[1:3]], return_tensors="pt")
    assert batch["input_ids"].shape[0] == 2
    with pytest.raises(TokenizerError, match="alternate"):
        tok.apply_chat_template(CHAT[1:2] * 2)
    with pytest.raises(TokenizerError, match="no chat template"):
        AutoTokenizer(_with_template(tokenizer, None)).apply_chat_template(CHAT)
    with pytest.raises(TokenizerError, match="not valid Jinja"):
        tok.apply_chat_template(CHAT, chat_template="{% for %}")


def test_template_is_saved_and_loaded_with_the_tokenizer(tokenizer, tmp_path):
    _with_template(tokenizer, LLAMA2).save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())["chat_template"] == LLAMA2
    assert Tokenizer.load(tmp_path / "a").chat_template == LLAMA2
    assert AutoTokenizer.from_pretrained(tmp_path / "a").chat_template == LLAMA2
    # Hugging Face's other places for it: a list of named templates, and chat_template.jinja
    tokenizer.save(tmp_path / "b")
    assert Tokenizer.load(tmp_path / "b").chat_template is None
    (tmp_path / "b" / "chat_template.jinja").write_text(ZEPHYR)
    assert Tokenizer.load(tmp_path / "b").chat_template == ZEPHYR
    cfg = json.loads((tmp_path / "b" / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": LLAMA2}]
    (tmp_path / "b" / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert Tokenizer.load(tmp_path / "b").chat_template == LLAMA2


@pytest.mark.parametrize("template", [DEFAULT_CHAT_TEMPLATE, LLAMA2, ZEPHYR])
def test_equals_transformers(tokenizer, tmp_path, template):
    transformers = pytest.importorskip("transformers")
    backend = tokenizers.Tokenizer.from_str(tokenizer.to_json())
    backend.add_special_tokens(list(CHATML_TOKENS))
    tok = Tokenizer(backend, tokenizer.roles, CHATML_TOKENS, template)
    tok.save(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    conversations = [CHAT[1:3], CHAT[1:], CHAT[:3] if template != ZEPHYR else CHAT,
                     [{"role": "user", "content": "  spaces \n and ünïcödé 中文 "}]]
    for conversation in conversations:
        for gen in (False, True):
            assert ours.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen) == \
                theirs.apply_chat_template(conversation, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(conversation, add_generation_prompt=gen, return_dict=False) == \
                theirs.apply_chat_template(conversation, add_generation_prompt=gen, return_dict=False)


def test_assistant_spans():
    text, spans = assistant_spans(DEFAULT_CHAT_TEMPLATE, CHAT)
    assert [text[a:b] for a, b in spans] == ["3 2 1<|im_end|>\n", "5 4<|im_end|>\n"]
    text, spans = assistant_spans(LLAMA2, CHAT, bos_token="<s>", eos_token="</s>")
    assert [text[a:b] for a, b in spans] == [" 3 2 1 </s>", " 5 4 </s>"]
    # a template that rewrites earlier turns once the conversation goes on: the assistant's text cannot be found
    rewriting = "{% for m in messages %}{{ m['content'] if loop.last else '...' }}{% endfor %}"
    with pytest.raises(TokenizerError, match="grows turn by turn"):
        assistant_spans(rewriting, CHAT[1:3])
