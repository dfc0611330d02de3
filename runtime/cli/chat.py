"""`foundry model run`: chat with a model in the terminal, streaming tokens from the service.

A client of the running service like every other command (it starts the service when none
runs, as Foundry Local does). In the REPL, `/exit` (or Ctrl-D) leaves, `/clear` forgets the
conversation, and Ctrl-C stops the reply being written, not the program: closing the stream
hangs up, and the service cancels the generation within one step.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from runtime.client import ServiceClient

__all__ = ["chat_once", "ensure_loaded", "repl", "stream_reply"]

HELP_TEXT = (
    "Commands: /exit (or Ctrl-D) leaves, /clear forgets the conversation, Ctrl-C stops a reply."
)


def ensure_loaded(client: ServiceClient, model: str) -> None:
    """Load `model`; a catalog model not in the cache is downloaded first, as Foundry Local does.

    Raises:
        ModelNotFound: neither cached nor in the catalog.
        DownloadFailed: the service reported a failed download.
    """
    from runtime.errors import DownloadFailed, ModelNotFound

    try:
        client.load(model)
        return
    except ModelNotFound:
        pass
    final: dict[str, Any] = {}
    for line in client.stream_lines("POST", "/openai/download", {"model": model}):
        if line.startswith("{"):
            final = json.loads(line)
        elif line.strip():
            click.echo(f"\r{line.strip()[:100]:<100}", nl=False, err=True)
    click.echo(err=True)
    if not final.get("success"):
        raise DownloadFailed(
            f"downloading {model!r} failed: {final.get('errorMessage') or 'no result'}"
        )
    client.load(model)


def stream_reply(client: ServiceClient, body: dict[str, Any]) -> Generator[str, None, None]:
    """Text deltas of one streamed chat completion.

    Raises:
        FoundryError leaf: the service refused the request, or sent an error mid-stream.
    """
    from runtime.client import error_from_response

    lines = client.stream_lines("POST", "/v1/chat/completions", {**body, "stream": True})
    try:
        for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                raise error_from_response(500, event)
            for choice in event.get("choices", ()):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
    finally:
        lines.close()  # hang up: the service cancels whatever is still generating


def _write_reply(client: ServiceClient, body: dict[str, Any]) -> tuple[str, bool]:
    """Print the reply as it streams; returns (text, finished). Ctrl-C stops it early."""
    parts: list[str] = []
    stream = stream_reply(client, body)
    try:
        for text in stream:
            parts.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        click.echo("\n[reply stopped]")
        return "".join(parts), False
    click.echo()
    return "".join(parts), True


def chat_once(client: ServiceClient, model: str, prompt: str, options: dict[str, Any]) -> None:
    """`--prompt`: one answer to stdout, then return."""
    messages = _with_system(options, [{"role": "user", "content": prompt}])
    _write_reply(client, {"model": model, "messages": messages, **_sampling(options)})


def repl(client: ServiceClient, model: str, options: dict[str, Any]) -> None:
    """Read a line, stream the answer, keep the conversation, until /exit or end of input."""
    _enable_line_editing()
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(f"Chatting with {model}. {HELP_TEXT}")
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            click.echo("\n(use /exit or Ctrl-D to leave)")
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/bye", "/quit"):
            break
        if text == "/clear":
            history.clear()
            click.echo("(conversation cleared)")
            continue
        if text in ("/help", "/?"):
            click.echo(HELP_TEXT)
            continue
        history.append({"role": "user", "content": text})
        body = {"model": model, "messages": _with_system(options, history), **_sampling(options)}
        reply, _ = _write_reply(client, body)
        history.append({"role": "assistant", "content": reply})


def _with_system(options: dict[str, Any], messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system = options.get("system")
    return [{"role": "system", "content": system}, *messages] if system else list(messages)


def _sampling(options: dict[str, Any]) -> dict[str, Any]:
    keys = ("max_tokens", "temperature", "seed", "ignore_eos")
    return {key: options[key] for key in keys if options.get(key) is not None}


def _enable_line_editing() -> None:
    """Arrow keys and history in `input()` where the platform has readline."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - importing it is what enables it
