"""The web console: its static files at `/` and `/console/*`, and the JSON it reads beyond the API.

The page (plain ES modules and CSS under `console/`) is served with a strict
Content-Security-Policy (this origin only; no inline code, no frames), so a model's reply
rendered in it can never run code. The files are served without the API key (the page must
load to ask for it); the JSON routes here need it. Only names in the console folder are
served: a request path never becomes a file path.
"""

from __future__ import annotations

import collections
import logging
import os
import resource
import threading
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import get
from litestar.response import Response

from runtime import __version__
from runtime.errors import FoundryError, NotFound
from runtime.hardware import MEMORY_FRACTION, Hardware, detect
from runtime.manager import ModelManager
from runtime.oci.format import build_json
from runtime.placement import choose_variant
from runtime.service import metrics
from runtime.service.apis.foundry.routes import _ps_row

if TYPE_CHECKING:
    from runtime.catalog import Variant
    from runtime.service.settings import ServiceSettings

__all__ = ["CONSOLE_HEADERS", "ErrorLog", "explain_choice", "routes"]

CONSOLE_DIR = Path(__file__).with_name("console")
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONSOLE_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-cache",
}


# --- static files ------------------------------------------------------------------------------
@cache
def _console_files() -> dict[str, Path]:
    """Name -> path of every file the console ships (read once: the package does not change)."""
    return {
        path.name: path
        for path in CONSOLE_DIR.iterdir()
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


@get(["/", "/console/{name:str}"], sync_to_thread=False, include_in_schema=False)
def console_file(name: str = "index.html") -> Response[bytes]:
    path = _console_files().get(name)
    if path is None:
        raise NotFound(f"the console has no file {name[:80]!r}")
    return Response(
        path.read_bytes(), media_type=CONTENT_TYPES[path.suffix], headers=CONSOLE_HEADERS
    )


# --- why this variant: the catalog as this machine sees it -----------------------------------
def explain_choice(
    variants: list[Variant], hardware: Hardware
) -> tuple[str | None, dict[str, str]]:
    """The variant `choose_variant` picks here (None if none runs) and one reason per variant id:
    its three rules (provider found, fits in memory, NPU > GPU > CPU), so the explanation cannot
    disagree with what `foundry model download ALIAS` would do."""
    try:
        picked: str | None = choose_variant(variants, hardware).id
    except FoundryError:
        picked = None
    picked_device = next((v.device for v in variants if v.id == picked), None)
    budget = hardware.memory_bytes * MEMORY_FRACTION
    found = ", ".join(sorted(hardware.providers))
    reasons: dict[str, str] = {}
    for variant in variants:
        if not hardware.has_provider(variant.provider):
            reasons[variant.id] = f"needs the {variant.provider} provider; found here: {found}"
        elif not hardware.fits(variant.size):
            reasons[variant.id] = (
                f"needs about {variant.size / 1e9:.1f} GB; "
                f"{MEMORY_FRACTION:.0%} of this machine's memory is {budget / 1e9:.1f} GB"
            )
        elif variant.id == picked:
            fit = f" ({variant.size / 1e9:.2f} of {budget / 1e9:.1f} GB allowed)" if budget else ""
            reasons[variant.id] = (
                f"picked: {variant.device} is the best device here whose provider "
                f"({variant.provider}) was found, and it fits in memory{fit}"
            )
        elif picked_device == variant.device:
            reasons[variant.id] = f"runs here; {picked} comes first in the catalog"
        else:
            reasons[variant.id] = f"runs here; {picked} is on a better device (NPU > GPU > CPU)"
    return picked, reasons


@get("/foundry/catalog", sync_to_thread=True)
def console_catalog(manager: ModelManager) -> dict[str, Any]:
    """Every catalog alias with its variants, the pick and why; cached and loaded state per id."""
    hardware = detect()
    cached = {m.model_id: m for m in manager.store.list_models()}
    loaded = {entry.model_id for entry in manager.loaded()}
    catalog = manager.catalog()
    aliases: list[dict[str, Any]] = []
    for alias in catalog.aliases():
        variants = catalog.variants(alias.alias)
        picked, reasons = explain_choice(variants, hardware)
        rows = [
            v.to_json()
            | {
                "reason": reasons[v.id],
                "runs_here": hardware.has_provider(v.provider) and hardware.fits(v.size),
                "cached": v.id in cached,
                "loaded": v.id in loaded,
            }
            for v in variants
        ]
        facts = ("alias", "display_name", "task", "publisher", "license")
        aliases.append(
            {key: getattr(alias, key) for key in facts} | {"picked": picked, "variants": rows}
        )
    known = {row["id"] for entry in aliases for row in entry["variants"]}
    local = [
        {"id": model_id, "size": model.size, "loaded": model_id in loaded}
        | {key: model.metadata.get(key) for key in ("task", "device", "provider", "precision")}
        for model_id, model in cached.items()
        if model_id not in known
    ]
    return {"hardware": hardware.to_json(), "aliases": aliases, "local": local}


# --- builds ------------------------------------------------------------------------------------
@get("/foundry/builds", sync_to_thread=True)
def console_builds(manager: ModelManager) -> list[dict[str, Any]]:
    """Each cached model with its build.json (None for an artifact downloaded without one)."""
    store = manager.store
    return [
        {
            "id": model.model_id,
            "digest": model.manifest_digest,
            "size": model.size,
            "metadata": model.metadata,
            "build": build_json(store, model.manifest),
        }
        for model in store.list_models()
    ]


# --- health ------------------------------------------------------------------------------------
class ErrorLog(logging.Handler):
    """The last warnings and errors this process logged, for the Health page."""

    def __init__(self, size: int = 50) -> None:
        super().__init__(level=logging.WARNING)
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        with self.guard:
            self.records.append(
                {
                    "time": record.created,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": message[:2000],
                }
            )

    def recent(self) -> list[dict[str, Any]]:
        with self.guard:
            return list(self.records)


ERROR_LOG = ErrorLog()


def _install_error_log(*names: str) -> None:
    """Listen on these loggers (idempotent). Not the root: Litestar's and uvicorn's set-up
    replace its handlers and their own after `create_app`, so `runtime` is joined from the
    start and `uvicorn.error` and `litestar` once serving has begun."""
    for name in names:
        logger = logging.getLogger(name)
        if ERROR_LOG not in logger.handlers:
            logger.addHandler(ERROR_LOG)


def _memory() -> dict[str, int]:
    """Machine total and available bytes (/proc/meminfo) and this process's resident bytes."""
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                info[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "total_bytes": info.get("MemTotal", 0),
        "available_bytes": info.get("MemAvailable", 0),
        "process_rss_bytes": rss,
    }


def _metric_totals() -> dict[str, float]:
    """Sums over every label set: the page turns successive samples into rates."""
    registry = metrics.REGISTRY
    with registry.lock:
        sums = {name: sum(series.values()) for name, series in registry.values.items()}
        ttft = registry.histograms.get("foundry_time_to_first_token_seconds", {}).values()
        ttft_sum, ttft_count = sum(h.total for h in ttft), sum(h.count for h in ttft)
        statuses = registry.values.get("foundry_requests_total", {})
        failed = sum(v for labels, v in statuses.items() if int(dict(labels)["status"]) >= 400)
    return {
        "prompt_tokens": sums.get("foundry_prompt_tokens_total", 0.0),
        "completion_tokens": sums.get("foundry_completion_tokens_total", 0.0),
        "requests": sums.get("foundry_requests_total", 0.0),
        "failed_requests": failed,
        "ttft_seconds_sum": ttft_sum,
        "ttft_count": ttft_count,
        "active_requests": sums.get("foundry_active_requests", 0.0),
    }


@get("/foundry/stats", sync_to_thread=True)  # the first call may probe the hardware
def console_stats(manager: ModelManager) -> dict[str, Any]:
    """What the Health page samples every few seconds (the same registry /metrics renders)."""
    _install_error_log("uvicorn.error", "litestar")
    return {
        "version": __version__,
        "time": time.time(),
        "hardware": detect().to_json(),
        "memory": _memory(),
        "loaded": [_ps_row(entry) for entry in manager.loaded()],
        "queue_depth": manager.waiting_requests(),
        "generating": manager.active_requests(),
        "totals": _metric_totals(),
        "errors": ERROR_LOG.recent()[::-1],
    }


def routes(settings: ServiceSettings) -> list[Any]:
    """The console's handlers: the JSON routes always, the page unless `--no-console`."""
    _install_error_log("runtime")
    api = [console_catalog, console_builds, console_stats]
    return [console_file, *api] if settings.console else api
