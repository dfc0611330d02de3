"""Every "Use it from …" snippet in the README runs, as written, against the real service.

The snippets name the endpoint `http://127.0.0.1:5273` and the model `qwen2.5-0.5b`; the test
substitutes the session service's endpoint and its tiny model, then runs each one the way a
user would (python for Python blocks, bash for shell blocks) and checks what it prints.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "README.md"
ENDPOINT = "http://127.0.0.1:5273"
MODEL = "qwen2.5-0.5b"
_BLOCK = re.compile(r"^### (?P<title>.+?)\n.*?^```(?P<lang>\w+)\n(?P<code>.*?)^```", re.M | re.S)


def snippets() -> list[tuple[str, str, str]]:
    """(title, language, code) of each fenced block under a `###` heading of "Use it from …"."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Use it from") :]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    return [(m["title"], m["lang"], m["code"]) for m in _BLOCK.finditer(section)]


def test_the_doc_has_a_snippet_for_each_client():
    titles = " | ".join(title for title, _, _ in snippets())
    for client in ("OpenAI Python client: chat", "Responses API", "Anthropic", "Ollama", "curl"):
        assert client in titles
    for _, _, code in snippets():
        assert ENDPOINT in code and MODEL in code  # so the substitution below reaches them


@pytest.mark.parametrize(("title", "lang", "code"), snippets(), ids=[t for t, _, _ in snippets()])
def test_snippet_runs_against_the_service(service, service_model, title, lang, code):
    code = code.replace(ENDPOINT, service.base_url).replace(MODEL, service_model)
    command = (
        [sys.executable, "-c", code]
        if lang == "python"
        else ["bash", "-euo", "pipefail", "-c", code]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), f"{title} printed nothing"
    if lang == "sh":  # curl prints the chat completion object
        reply = json.loads(done.stdout)
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    if "Ollama" in title:  # its first line is the model list
        assert repr(service_model) in done.stdout.splitlines()[0]
