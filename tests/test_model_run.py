"""`foundry model load|unload|ps|run`: the CLI as a client of the running service.

Against the session service (tiny synthetic Qwen2.5 `tiny-qwen`); the interactive chat runs
under a real pseudo-terminal (the `pty` module), so Ctrl-C is a real SIGINT from the terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import time
from pathlib import Path

import httpx
import pytest
from conftest import foundry_cli_path, run_foundry

HELLO = [{"role": "user", "content": "Hello there"}]


def loaded_models(service) -> list[str]:
    return httpx.get(f"{service.base_url}/openai/loadedmodels", timeout=30).json()


@pytest.fixture
def idle_service(service):
    """The session service with nothing loaded: other files (embeddings, speech) leave their
    models resident for up to their TTL, and this test's story ends with "No model is loaded"."""
    httpx.post(f"{service.base_url}/openai/unloadall", timeout=60).raise_for_status()
    assert loaded_models(service) == []
    return service


def test_load_ps_unload_through_the_cli(idle_service, service_model):
    service = idle_service
    loaded = service.cli("model", "load", service_model, "--ttl", "600")
    assert loaded.returncode == 0, loaded.stderr
    assert f"loaded {service_model}" in loaded.stdout
    assert service_model in loaded_models(service)

    rows = json.loads(service.cli("model", "ps", "--json").stdout)["models"]
    row = next(r for r in rows if r["model"] == service_model)
    assert row["idle_seconds"] >= 0 and 0 < row["expires_in"] <= 600
    table = service.cli("model", "ps")
    assert service_model in table.stdout and "unloads in" in table.stdout

    unloaded = service.cli("model", "unload", service_model)
    assert unloaded.returncode == 0 and f"unloaded {service_model}" in unloaded.stdout
    assert service_model not in loaded_models(service)
    assert "was not loaded" in service.cli("model", "unload", service_model).stdout
    assert "No model is loaded" in service.cli("model", "ps").stdout


def test_a_model_loaded_with_a_short_ttl_unloads_once_idle(service, service_model):
    assert service.cli("model", "load", service_model, "--ttl", "1").returncode == 0
    assert service_model in loaded_models(service)
    deadline = time.monotonic() + 60
    while service_model in loaded_models(service) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert service_model not in loaded_models(service)


def test_loading_an_unknown_model_fails_in_one_line(service):
    result = service.cli("model", "load", "no-such-model")
    assert result.returncode == 3
    assert result.stderr.startswith("error: ") and "no-such-model" in result.stderr.splitlines()[0]
    assert "Traceback" not in result.stderr


def test_running_a_model_neither_cached_nor_in_the_catalog_fails_in_one_line(service):
    result = service.cli("model", "run", "no-such-model", "--prompt", "hi")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: model 'no-such-model' is not in the catalog"
    assert len(lines) <= 2 and "Traceback" not in result.stderr


def test_run_with_a_prompt_prints_the_same_answer_the_api_gives(
    service, service_model, openai_client
):
    result = service.cli(
        "model",
        "run",
        service_model,
        "--prompt",
        "Hello there",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    )
    assert result.returncode == 0, result.stderr
    expected = (
        openai_client.chat.completions.create(
            model=service_model, messages=HELLO, max_tokens=12, temperature=0
        )
        .choices[0]
        .message.content
    )
    assert expected
    assert result.stdout == expected + "\n"


def test_run_starts_the_service_when_none_runs(
    tmp_path: Path, service, service_model, monkeypatch: pytest.MonkeyPatch
):
    from runtime.store import Store

    home = tmp_path / "home"
    source = Store(service.home / "cache", sweep=False).resolve(service_model)
    Store(home / "cache").register(Path(source.path), model_id=service_model, metadata=source.info)
    try:
        result = run_foundry(
            "model",
            "run",
            service_model,
            "--prompt",
            "Hi",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            home=home,
        )
        assert result.returncode == 0, result.stderr
        assert "Starting the foundry service" in result.stderr
        assert result.stdout.strip()
        assert json.loads((home / "service.json").read_text())["pid"] > 0
    finally:
        run_foundry("service", "stop", home=home)


class Terminal:
    """`foundry ARGS` under a pseudo-terminal: what a user at a keyboard sees and types."""

    def __init__(self, args: list[str], home: Path):
        env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_API_KEY"}
        env |= {"FOUNDRY_HOME": str(home), "TERM": "dumb"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes `foundry` with the pty as its controlling terminal
            os.execve(foundry_cli_path(), [foundry_cli_path(), *args], env)
        self.output = ""
        self.position = 0  # where the next read_until starts looking

    def read_until(self, pattern: str, timeout: float = 60) -> str:
        """Wait for `pattern` in output not matched before; returns the text up to its end."""
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.output[self.position :])) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{pattern!r} not seen; output so far: {self.output[-2000:]!r}"
                )
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(
                        f"{pattern!r} not seen before exit; output: {self.output[-2000:]!r}"
                    )
                self.output += chunk.decode(errors="replace")
        start, self.position = self.position, self.position + match.end()
        return self.output[start : self.position]

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.output += os.read(self.fd, 4096).decode(errors="replace")
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, 9)
        raise AssertionError(f"still running; output: {self.output[-2000:]!r}")


def test_interactive_run_chats_clears_stops_a_reply_on_ctrl_c_and_exits(service, service_model):
    # --ignore-eos with a long budget: the reply is still streaming when Ctrl-C arrives.
    term = Terminal(
        ["model", "run", service_model, "--max-tokens", "20000", "--ignore-eos"], service.home
    )
    term.read_until(r"Chatting with tiny-qwen")
    term.read_until(r">>> ")
    term.type("/clear\r")
    term.read_until(r"conversation cleared")
    term.type("Tell me a long story\r")
    term.read_until(r"story\r?\n.")  # the echo, then the first streamed text
    term.type("\x03")  # Ctrl-C from the terminal: a real SIGINT
    term.read_until(r"\[reply stopped\]")
    term.read_until(r">>> ")
    deadline = time.monotonic() + 3  # hanging up cancelled the generation in the service
    while time.monotonic() < deadline:
        rows = httpx.get(f"{service.base_url}/foundry/ps", timeout=10).json()["models"]
        if all(row["active_requests"] == 0 for row in rows):
            break
        time.sleep(0.1)
    assert all(row["active_requests"] == 0 for row in rows)
    term.type("\x03")  # Ctrl-C at the prompt only says how to leave
    term.read_until(r"use /exit or Ctrl-D to leave")
    term.type("/exit\r")
    assert term.exit_code() == 0
    assert "Traceback" not in term.output


def test_interactive_run_answers_and_leaves_on_end_of_input(service, service_model):
    term = Terminal(["model", "run", service_model, "--max-tokens", "8"], service.home)
    term.read_until(r">>> ")
    term.type("Hello there\r")
    term.read_until(r"\n>>> ")  # a reply was streamed, then the prompt came back
    term.type("\x04")  # Ctrl-D
    assert term.exit_code() == 0
