"""Render chat messages into the prompt text with the artifact's own chat template.

Hugging Face semantics: the template sees `messages`, `tools`, `add_generation_prompt`,
`bos_token`, `eos_token` and may call `raise_exception` and `strftime_now`. It runs in
jinja2's immutable sandbox (a template is data from a model repo, not trusted code).
The template comes from `tokenizer_config.json["chat_template"]` or, as transformers 5
writes it, `chat_template.jinja`.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from runtime.errors import InvalidMessages

__all__ = ["ChatTemplate", "load_chat_template"]

# Used when an artifact ships no template at all (ChatML, which most small models follow).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @cached_property
    def _template(self) -> Any:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        return env.from_string(self.source)

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt text for `messages` (content: a string or a list of text parts).

        Raises:
            InvalidMessages: the template raised (e.g. roles that do not alternate).
        """
        from jinja2 import TemplateError as JinjaError

        try:
            return self._template.render(
                messages=[_flatten(m) for m in messages],
                tools=tools or None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except InvalidMessages:
            raise
        except JinjaError as exc:
            raise InvalidMessages(f"the chat template failed: {exc}", param="messages") from exc
        except (TypeError, ValueError, RecursionError) as exc:  # e.g. tojson of an Undefined field
            raise InvalidMessages(
                f"the chat template could not render these messages: {str(exc)[:200]}",
                param="messages",
            ) from None


def load_chat_template(folder: Path) -> ChatTemplate:
    """Read the template and special tokens of an artifact folder."""
    config: dict[str, Any] = {}
    config_path = folder / "tokenizer_config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text(encoding="utf-8"))
    source = config.get("chat_template")
    if isinstance(
        source, list
    ):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        named = {entry.get("name"): entry.get("template") for entry in source}
        source = named.get("default") or next(iter(named.values()), None)
    jinja_file = folder / "chat_template.jinja"
    if not source and jinja_file.exists():
        source = jinja_file.read_text(encoding="utf-8")
    return ChatTemplate(
        source or CHATML,
        bos_token=_token_text(config.get("bos_token")),
        eos_token=_token_text(config.get("eos_token")),
    )


def _flatten(message: dict[str, Any]) -> dict[str, Any]:
    """List-of-parts content becomes one string (text parts only; the wire layer checks types)."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return {**message, "content": text}
    if content is None:
        return {**message, "content": ""}
    return message


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content") or "")
    return str(value or "")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise_exception(message: str) -> None:
    raise InvalidMessages(f"the chat template refused the messages: {message}", param="messages")
