"""The service state file, `$FOUNDRY_HOME/service.json`: how the CLI and SDKs find the service.

The service writes it once its socket is bound and removes it on exit; readers treat a file
whose pid is dead (or is no longer our server) as stale and remove it. Foundry Local's SDK
runs `foundry service status` ~10 times a second while the service starts, so reading it
imports only the stdlib and msgspec: never litestar, uvicorn or onnxruntime.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

from runtime.settings import state_file

__all__ = [
    "LOOPBACK_HOSTS",
    "ServiceState",
    "endpoint_host",
    "is_pid_alive",
    "read_state",
    "remove_state",
    "running_state",
    "write_state",
]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
# What the server's command line contains (`-m runtime.service.launcher`); a live pid
# without it was reused by another program.
SERVER_MODULE = "runtime.service."


class ServiceState(msgspec.Struct, frozen=True):
    """What a running service tells its clients. The API key itself is never written."""

    pid: int
    host: str
    port: int
    started: float
    version: str
    api_key_set: bool = False

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`: the form Foundry Local's SDKs regex-parse from `status`."""
        return f"http://{endpoint_host(self.host)}:{self.port}"


def endpoint_host(host: str) -> str:
    """The address a local client dials: a wildcard or loopback bind is reached on 127.0.0.1."""
    if host in ("0.0.0.0", "::", "", *LOOPBACK_HOSTS):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def write_state(state: ServiceState, path: Path | None = None) -> Path:
    """Write the file atomically (a temp file in the same folder, fsync, rename)."""
    from runtime.store.atomic import atomic_write  # only the server writes it: status stays light

    path = path or state_file()
    atomic_write(path, msgspec.json.format(msgspec.json.encode(state)), path.parent)
    return path


def read_state(path: Path | None = None) -> ServiceState | None:
    """The file's content, or None when it is missing or unreadable (a torn or foreign file)."""
    path = path or state_file()
    try:
        return msgspec.json.decode(path.read_bytes(), type=ServiceState)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def remove_state(pid: int | None = None, path: Path | None = None) -> None:
    """Remove the file; with `pid`, only if it still belongs to that process (a newer
    service may already have replaced it)."""
    path = path or state_file()
    if pid is not None:
        current = read_state(path)
        if current is not None and current.pid != pid:
            return
    path.unlink(missing_ok=True)


def is_pid_alive(pid: int) -> bool:
    """True while `pid` runs and is not a zombie (containers' pid 1 may never reap it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state letter follows the parenthesised command name.
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _is_our_server(pid: int) -> bool:
    """Guard against pid reuse: on Linux, the pid's command line must name our server."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return SERVER_MODULE.encode() in cmdline.read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc here (macOS): trust the pid


def running_state(path: Path | None = None) -> ServiceState | None:
    """The state of a live service, or None; a stale file (dead or reused pid) is removed."""
    path = path or state_file()
    state = read_state(path)
    if state is None:
        return None
    if is_pid_alive(state.pid) and _is_our_server(state.pid):
        return state
    remove_state(state.pid, path)
    return None


def new_state(host: str, port: int, version: str, *, api_key_set: bool) -> ServiceState:
    """The state of this process, serving on `host:port`."""
    return ServiceState(
        pid=os.getpid(),
        host=host,
        port=port,
        started=round(time.time(), 3),
        version=version,
        api_key_set=api_key_set,
    )
