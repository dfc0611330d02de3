"""Where things live and which environment variables steer them.

Every value is read at call time, never at import time, so a test that sets
`FOUNDRY_HOME` with monkeypatch sees its own root. Never imports heavy modules.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ENV_VARS",
    "REPO_ROOT",
    "cache_dir",
    "catalog_dirs",
    "env",
    "env_number",
    "foundry_home",
    "keep_private",
    "state_file",
]

# The source checkout (recipes/ and catalog/ are data folders beside the packages).
REPO_ROOT = Path(__file__).resolve().parents[1]

ENV_VARS: dict[str, str] = {
    "FOUNDRY_HOME": "root for the cache, catalog overrides and service state (default ~/.foundry)",
    "FOUNDRY_API_KEY": "API key the service requires on every route but /health",
    "FOUNDRY_HOST": "address the service binds (default 127.0.0.1)",
    "FOUNDRY_PORT": "port the service binds (default: a free port)",
    "FOUNDRY_MAX_LOADED": "how many models stay resident at once (default 2)",
    "FOUNDRY_TTL": "seconds an idle model stays loaded (default 600)",
    "FOUNDRY_THREADS": "intra-op threads per model session (default: the physical cores)",
    "FOUNDRY_SPIN": "on|off: onnxruntime's idle threads busy-wait (default: on unless others keep "
    "a quarter of the cores busy at load)",
    "FOUNDRY_HUGE_PAGES": "0 to leave the service's malloc on 4 KiB pages (default: it asks for "
    "transparent huge pages, glibc.malloc.hugetlb=1: decode ~12 % faster here)",
    "FOUNDRY_KV_BUDGET_MB": "KV-cache MiB the batched chat sequences may hold (default 1024)",
    "FOUNDRY_DEBUG": "set to 1 to show tracebacks instead of one-line errors",
    "FOUNDRY_REGISTRY_USERNAME": "user for OCI registries (else docker's config.json is read)",
    "FOUNDRY_REGISTRY_PASSWORD": "password for OCI registries, with FOUNDRY_REGISTRY_USERNAME",
    "FOUNDRY_REGISTRY_TOKEN": "bearer token sent to OCI registries as is",
    "FOUNDRY_REGISTRY_INSECURE": "set to 1 to speak plain HTTP to a non-loopback registry",
    "DOCKER_CONFIG": "folder of docker's config.json (registry logins; default ~/.docker)",
    "HF_ENDPOINT": "Hugging Face hub address used for downloads",
    "HF_TOKEN": "Hugging Face token, sent for gated repositories (e.g. Mistral)",
    "HF_HUB_OFFLINE": "set to 1 to never touch the network",
}


def env(name: str, default: str | None = None) -> str | None:
    """Read one of `ENV_VARS` (empty counts as unset)."""
    value = os.environ.get(name)
    return value if value else default


def env_number(name: str, kind: type[int] | type[float]) -> int | float | None:
    """A numeric variable of `ENV_VARS`, or None when unset.

    Raises:
        InvalidRequest: the value is not a number (one line naming the variable, not a traceback).
    """
    from runtime.errors import InvalidRequest

    value = env(name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(
            f"{name}={value!r} is not a number", hint=f"unset {name} or set it to e.g. {kind(1)!r}"
        ) from None


def foundry_home() -> Path:
    """The one root of all state: `$FOUNDRY_HOME`, else `~/.foundry`."""
    return Path(env("FOUNDRY_HOME") or Path.home() / ".foundry").expanduser()


def keep_private() -> None:
    """Make what this process creates the owner's alone (0600 files, 0700 folders).

    FOUNDRY_HOME holds prompts and replies (stored Responses, the service log) and the
    service's state; the CLI entry points and the service process call this first.
    """
    os.umask(0o077)


def cache_dir() -> Path:
    return foundry_home() / "cache"


def state_file() -> Path:
    """The running service writes its pid, host and port here (the CLI and SDK read it)."""
    return foundry_home() / "service.json"


def catalog_dirs() -> list[Path]:
    """Built-in catalog first, then the user's own files, which may add or override aliases."""
    return [REPO_ROOT / "catalog", foundry_home() / "catalog"]
