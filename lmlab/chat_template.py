"""Chat templates: how a conversation becomes one text, as Hugging Face ``transformers`` renders it.

A template is Jinja kept with the tokenizer (``chat_template`` in ``tokenizer_config.json``). It sees
``messages`` (``[{"role", "content"}, ...]``), ``add_generation_prompt`` and the special token strings
(``bos_token``, ``eos_token``...), and is rendered in the same sandbox with the same options as
``transformers.apply_chat_template`` (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, ``raise_exception``,
a ``tojson`` that does not escape HTML), so a template from a Hugging Face model gives the same text. A tokenizer
with no template gets :data:`DEFAULT_CHAT_TEMPLATE` (ChatML) when an objective needs one.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmlab.errors import TokenizerError

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MESSAGE_ROLES = ("system", "user", "assistant", "tool")

Message = dict[str, str]


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as e:
        raise TokenizerError(f"the chat template is not valid Jinja ({e})") from None


def render(template: str, messages: list[Message], add_generation_prompt: bool = False, **variables: Any) -> str:
    """The text of ``messages`` through ``template`` (``variables``: the special token strings and the like).

    Raises:
        TokenizerError: a template that is not valid Jinja or fails on these messages (``raise_exception``).
    """
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **variables)
    except TokenizerError:
        raise
    except Exception as e:  # whatever the template's own expressions raise (TemplateError, TypeError...)
        raise TokenizerError(f"the chat template does not render this conversation ({type(e).__name__}: {e})"
                             ) from None


def template_variables(tokenizer: Any) -> dict[str, Any]:
    """What a template sees besides the messages, as ``transformers`` gives it: the special token strings of an
    lmlab ``Tokenizer`` (``bos_token``, ``eos_token``, ``pad_token``... and ``additional_special_tokens``)."""
    return {**{f"{role}_token": token for role, token in tokenizer.roles.items()},
            "additional_special_tokens": list(tokenizer.additional_special_tokens)}


def prompt_messages(messages: list[Message]) -> list[Message]:
    """A conversation's prompt: the messages before its final assistant turn (all of them when it ends with
    another role), which a model answers after the generation prompt."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def assistant_spans(template: str, messages: list[Message], **variables: Any) -> tuple[str, list[tuple[int, int]]]:
    """The text of a whole conversation and the (start, end) character spans of its assistant turns: each is
    what rendering the conversation up to that turn adds to the prompt rendered with the generation prompt
    (for ChatML ``content<|im_end|>\\n``), so the model learns to write the turn and to end it.

    Raises:
        TokenizerError: the template does not render a conversation as a text that grows turn by turn, so the
            assistant's tokens cannot be told apart.
    """
    text = render(template, messages, **variables)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(template, messages[:i], add_generation_prompt=True, **variables)
        upto = render(template, messages[:i + 1], **variables)
        if not (upto.startswith(prompt) and text.startswith(upto)):
            raise TokenizerError("the chat template does not render a conversation as a text that grows turn by "
                                 "turn (the text up to an assistant turn is not the start of the whole), so the "
                                 "assistant's tokens cannot be found; use a template without such rewriting")
        spans.append((len(prompt), len(upto)))
    return text, spans
