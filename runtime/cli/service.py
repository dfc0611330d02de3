"""`foundry service start|status|stop|restart`: the service's lifecycle, seen from the CLI.

`start` builds the ServiceSettings once and launches `python -m runtime.service.launcher` with
them, detached (its own session, output to `$FOUNDRY_HOME/logs/service.log`), and returns
once `/health` answers. `status` is run by
Foundry Local's SDK about ten times a second while the service starts, and regex-parses
`http://127.0.0.1:PORT` out of its output: it imports only click, the stdlib and msgspec,
and asks the running service (not onnxruntime) what it serves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.cli import API_KEY_ARG_ENV
from runtime.engines.huge_pages import HUGE_PAGES_ENV
from runtime.errors import InvalidRequest, ServiceStartFailed
from runtime.settings import env, env_number, foundry_home

if TYPE_CHECKING:
    import subprocess

    from runtime.service.settings import ServiceSettings

__all__ = ["console", "console_url", "group", "start_service", "stop_service"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_LIMIT = 10 * 1024 * 1024


def log_path() -> Path:
    return foundry_home() / "logs" / "service.log"


def _request(base_url: str, path: str, timeout: float = 1.0) -> tuple[bytes, bytes] | None:
    """GET `path` from the service: (status code, body), or None when nothing answers.

    A bare HTTP/1.0 exchange over a socket: `status` runs ten times a second while Foundry
    Local's SDK waits for the service, and httpx (~100 ms) or urllib (~20 ms, it loads ssl)
    would be most of its start-up.
    """
    import socket

    host, _, port = base_url.removeprefix("http://").rpartition(":")
    key = env("FOUNDRY_API_KEY")
    headers = f"Host: {host}:{port}\r\nAccept: application/json\r\n"
    if key:
        headers += f"Authorization: Bearer {key}\r\n"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.sendall(f"GET {path} HTTP/1.0\r\n{headers}\r\n".encode("latin-1"))
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except (OSError, ValueError):
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    return (status[0] if status else b""), body


def _probe(base_url: str, path: str, timeout: float = 1.0) -> Any:
    """GET `path` from the service; its JSON, or None when it does not answer 200."""
    answer = _request(base_url, path, timeout)
    if answer is None or answer[0] != b"200":
        return None
    try:
        return json.loads(answer[1] or b"null")
    except ValueError:
        return None


def console_url(base_url: str) -> str | None:
    """The console's address, or None when the service runs with `--no-console`."""
    answer = _request(base_url, "/")
    return f"{base_url}/" if answer is not None and answer[0] == b"200" else None


SERVER_COMMAND = [sys.executable, "-m", "runtime.service.launcher"]


def _check(settings: ServiceSettings) -> None:
    """Refuse an unsafe bind here, in one line, rather than in a child that dies."""
    from runtime.service.security import check_bind

    check_bind(settings.host, settings.api_key, settings.insecure)


def _rotate_log() -> None:
    """Keep one previous log once the current one passes LOG_LIMIT bytes."""
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # a log from before files were kept private
        log.parent.chmod(0o700)
        log.chmod(0o600)
    if log.exists() and log.stat().st_size > LOG_LIMIT:
        log.replace(log.with_name(log.name + ".1"))


def _log_tail(lines: int = 5) -> str:
    try:
        text = log_path().read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _wait_until_healthy(process: subprocess.Popen[bytes], timeout: float) -> Any:
    """Poll until the child wrote the state file and answers /health; fail early if it dies."""
    from runtime.service.state import read_state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_tail()
            raise ServiceStartFailed(
                f"the service exited with code {process.returncode} while starting"
                + (f": {tail}" if tail else ""),
                hint=f"see {log_path()}",
            )
        state = read_state()
        if state is not None and state.pid == process.pid and _probe(state.base_url, "/health"):
            return state
        time.sleep(0.05)
    process.terminate()
    raise ServiceStartFailed(
        f"the service did not answer /health within {timeout:g} s", hint=f"see {log_path()}"
    )


def start_service(
    settings: ServiceSettings | None = None, timeout: float = START_TIMEOUT
) -> tuple[Any, bool]:
    """Start the service detached unless one runs; returns (state, started_now).

    Raises:
        InsecureBind: a non-loopback host without an API key or `insecure`.
        ServiceStartFailed: the child died or did not answer /health in time.
    """
    import subprocess

    import msgspec
    from filelock import FileLock

    from runtime.service.settings import launch_environment, settings_from
    from runtime.service.state import running_state

    settings = settings or settings_from(log_level="info")
    _check(settings)
    lock_dir = foundry_home() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    # Two concurrent `start`s (an SDK and a user) start one service.
    with FileLock(str(lock_dir / "service.lock"), timeout=timeout + 5):
        state = running_state()
        if state is not None and _probe(state.base_url, "/health"):
            return state, False
        _rotate_log()
        # The detached service rotates its own log while it runs (service_log.py).
        settings = msgspec.structs.replace(
            settings, log_file=str(log_path()), log_max_bytes=LOG_LIMIT
        )
        with log_path().open("ab") as log:
            process = subprocess.Popen(
                SERVER_COMMAND,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=launch_environment(settings),
                # `python -m` puts the cwd first on sys.path: a `runtime/` folder must not win.
                cwd=str(foundry_home()),
                start_new_session=True,
                close_fds=True,
            )
        return _wait_until_healthy(process, timeout), True


def stop_service(timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM the service, SIGKILL it after `timeout`; returns its pid, None if none ran."""
    from runtime.service.state import is_pid_alive, remove_state, running_state

    state = running_state()
    if state is None:
        return None
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        remove_state(state.pid)
        return state.pid
    deadline = time.monotonic() + timeout
    while is_pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_pid_alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
        while is_pid_alive(state.pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
    remove_state(state.pid)
    return state.pid


def _print_started(state: Any, started_now: bool) -> None:
    verb = "started" if started_now else "is already running"
    click.echo(f"Service {verb} (pid {state.pid}).")
    click.echo(f"Model management service is running on {state.base_url}/openai/status")
    click.echo(f"OpenAI base URL: {state.base_url}/v1")
    if (url := console_url(state.base_url)) is not None:
        click.echo(f"Console: {url}  (or run: foundry console)")


# --- commands ------------------------------------------------------------------------------
@click.group("service")
def group() -> None:
    """Start, stop and inspect the local inference service."""


def _start_options(func: Any) -> Any:
    options = [
        click.option(
            "--host",
            default=lambda: env("FOUNDRY_HOST", "127.0.0.1"),
            show_default="127.0.0.1",
            help="Address to bind; anything but loopback needs --api-key or --insecure.",
        ),
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=lambda: env_number("FOUNDRY_PORT", int) or 0,
            show_default="a free port",
            help="Port to bind.",
        ),
        click.option(
            "--api-key",
            default=None,
            envvar=API_KEY_ARG_ENV,  # where `hide_api_key` moved it, out of `ps`
            show_envvar=False,
            help="Require this key on every route but /health (default $FOUNDRY_API_KEY).",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Read the key from this file's first line (kept out of the command line).",
        ),
        click.option(
            "--insecure", is_flag=True, help="Allow a non-loopback bind without an API key."
        ),
        click.option(
            "--max-loaded",
            type=click.IntRange(1, 64),
            default=None,
            help="Models kept resident at once (default $FOUNDRY_MAX_LOADED or 2).",
        ),
        click.option(
            "--ttl",
            type=click.FloatRange(0),
            default=None,
            help="Seconds an idle model stays loaded (default $FOUNDRY_TTL or 600).",
        ),
        click.option(
            "--cors-origin",
            "cors_origins",
            multiple=True,
            help="Let web pages from this origin call the service (repeatable; default: none).",
        ),
        click.option(
            "--no-console",
            "console",
            is_flag=True,
            flag_value=False,
            default=True,
            help="Do not serve the web console at / (the API is unchanged).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(1),
            default=START_TIMEOUT,
            show_default=True,
            help="Seconds to wait for the service to answer /health.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@group.command("start")
@_start_options
@click.option(
    "--foreground", is_flag=True, help="Serve in this process until Ctrl-C (logs to the terminal)."
)
def start(timeout: float, foreground: bool, **values: Any) -> None:
    """Start the service in the background and print its endpoint."""
    settings = _settings(values)
    if foreground:
        from runtime.service.settings import launch_environment

        _check(settings)
        # Become the server process (same terminal, Ctrl-C stops it), so the state file's pid
        # and command line are the server's own.
        foundry_home().mkdir(parents=True, exist_ok=True)
        os.chdir(foundry_home())  # a `runtime/` folder in the cwd must not shadow ours
        os.execve(SERVER_COMMAND[0], SERVER_COMMAND, launch_environment(settings))
    _print_started(*start_service(settings, timeout))


def _settings(values: dict[str, Any]) -> ServiceSettings:
    """The service's settings, built once here from the options over the environment."""
    from runtime.service.settings import settings_from

    os.environ.pop(API_KEY_ARG_ENV, None)  # read by its option; the service gets it from settings
    key_file = values.pop("api_key_file", None)
    if key_file is not None and not values.get("api_key"):
        lines = key_file.read_text(errors="replace").splitlines()
        values["api_key"] = lines[0].strip() if lines else ""
        if not values["api_key"]:
            raise InvalidRequest(
                f"--api-key-file {key_file} holds no key", hint="write the key on its first line"
            )
    # A bad FOUNDRY_* number is one line here, not a dead child.
    return settings_from(**values, log_level="info")


@group.command("stop")
def stop() -> None:
    """Stop the service (SIGTERM, then SIGKILL after 10 s); nothing to do is not an error."""
    pid = stop_service()
    click.echo("Service is not running." if pid is None else f"Service stopped (pid {pid}).")


@group.command("restart")
@_start_options
def restart(timeout: float, **values: Any) -> None:
    """Stop the service if it runs, then start it again with these options."""
    settings = _settings(values)
    _check(settings)  # refuse before stopping anything
    stop_service()
    _print_started(*start_service(settings, timeout))


@group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(as_json: bool) -> None:
    """Say whether the service runs, where, and what it serves (exit 0 either way)."""
    from runtime.service.state import running_state

    state = running_state()
    info = _status_info(state) if state is not None else None
    if as_json:
        click.echo(
            json.dumps(info or {"running": False, "cache": str(foundry_home() / "cache")}, indent=2)
        )
        return
    if info is None:
        click.echo("Model management service is not running.")
        click.echo("Start it with: foundry service start")
        return
    click.echo(f"Model management service is running on {info['endpoint']}/openai/status")
    click.echo(f"  endpoint   {info['endpoint']}/v1")
    click.echo(f"  pid        {info['pid']}")
    click.echo(f"  version    {info['version']}")
    click.echo(f"  providers  {', '.join(info['providers']) or 'unknown'}")
    loaded = info["loaded"]
    if loaded is None:
        loaded_text = "unknown (API key required: set FOUNDRY_API_KEY)"
    else:
        loaded_text = ", ".join(loaded) or "none"
    click.echo(f"  loaded     {loaded_text}")
    if threads := info.get("threads"):
        click.echo(f"  threads    {threads['intraOp']} per model ({threads['source']})")
    if pages := info.get("huge_pages"):
        click.echo(f"  memory     {_huge_pages_text(pages)}")
    click.echo(f"  cache      {info['cache']}")
    click.echo(f"  log        {log_path()}")


def _huge_pages_text(pages: dict[str, Any]) -> str:
    """One line: how much sits in huge pages, and why (or why not)."""
    asked = "asked for" if pages["requested"] else f"not asked for: {HUGE_PAGES_ENV}=0"
    return f"{pages['residentMib']} MiB in huge pages ({asked}; system THP {pages['system']})"


def _status_info(state: Any) -> dict[str, Any]:
    """The state file plus what the service says about itself (one HTTP round trip)."""
    details = _probe(state.base_url, "/openai/status") or {}
    return {
        "running": True,
        "endpoint": state.base_url,
        "pid": state.pid,
        "host": state.host,
        "port": state.port,
        "started": state.started,
        "version": details.get("version", state.version),
        "api_key_set": state.api_key_set,
        "providers": details.get("providers", []),
        "loaded": details.get("loadedModels"),
        "threads": details.get("threads"),
        "huge_pages": details.get("hugePages"),
        "cache": details.get("modelDirPath") or str(foundry_home() / "cache"),
    }


@click.command("console")
@click.option("--print-only", is_flag=True, help="Print the console's URL without opening it.")
def console(print_only: bool) -> None:
    """Open the running service's web console in the default browser."""
    import webbrowser

    from runtime.errors import ConsoleOff, ServiceNotRunning
    from runtime.service.state import running_state

    state = running_state()
    if state is None or _request(state.base_url, "/health") is None:
        raise ServiceNotRunning("the foundry service is not running", hint="foundry service start")
    url = console_url(state.base_url)
    if url is None:
        raise ConsoleOff(
            f"the service at {state.base_url} runs without its console (--no-console)",
            hint="foundry service restart  # without --no-console",
        )
    click.echo(f"Console: {url}")
    if not print_only and not webbrowser.open(url):
        click.echo("No browser could be started here: open the address above.")
