"""Prometheus metrics: counters and histograms the service updates, rendered as text at /metrics.

Hand-written exposition format 0.0.4, no client library. Requests are labelled by route
template (never the raw path: model names would explode the label set), so labels carry
route templates, methods, statuses and model ids only: never a header, so never an API key.
Listeners may run off the event loop, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.engines.base import GenerationRecord

__all__ = [
    "CONTENT_TYPE",
    "MetricsMiddleware",
    "observe_request",
    "observe_ttft",
    "record_generation",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative buckets, sum and count for one label set."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class Registry:
    """All series of one process. Counters and gauges share one table of values, both moved
    by `add` (a gauge up or down); `HELP` says which kind a name is."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.histograms: dict[str, dict[Labels, Histogram]] = defaultdict(dict)

    def add(self, name: str, labels: Labels, delta: float = 1.0) -> None:
        with self.lock:
            series = self.values[name]
            series[labels] = series.get(labels, 0.0) + delta

    def observe(self, name: str, labels: Labels, value: float, buckets: tuple[float, ...]) -> None:
        with self.lock:
            series = self.histograms[name]
            if labels not in series:
                series[labels] = Histogram(buckets)
            series[labels].observe(value)


REGISTRY = Registry()

HELP: dict[str, tuple[str, str]] = {
    "foundry_requests_total": ("counter", "HTTP requests by route template, method and status."),
    "foundry_request_duration_seconds": ("histogram", "HTTP request duration by route template."),
    "foundry_active_requests": ("gauge", "HTTP requests being answered now."),
    "foundry_prompt_tokens_total": ("counter", "Prompt tokens processed, by model."),
    "foundry_completion_tokens_total": ("counter", "Tokens generated, by model."),
    "foundry_time_to_first_token_seconds": (
        "histogram",
        "Time from request to first generated token.",
    ),
    "foundry_time_per_output_token_seconds": ("histogram", "Time between generated tokens."),
    "foundry_queue_depth": ("gauge", "Generation requests waiting for a slot."),
    "foundry_generating_requests": ("gauge", "Generation requests being decoded now."),
    "foundry_loaded_models": ("gauge", "Models resident in memory."),
    "foundry_model_loaded": ("gauge", "1 for each resident model."),
    "foundry_info": ("gauge", "Service version."),
}


# --- hooks the generation path calls ------------------------------------------------------
def observe_ttft(model: str, seconds: float) -> None:
    REGISTRY.observe(
        "foundry_time_to_first_token_seconds", (("model", model),), seconds, TTFT_BUCKETS
    )


def record_generation(record: GenerationRecord) -> None:
    """A finished sequence (the manager's listener): tokens, time to first token, and its
    mean time per output token (vLLM's TPOT: one observation per request)."""
    labels = (("model", record.model_id),)
    REGISTRY.add("foundry_prompt_tokens_total", labels, record.prompt_tokens)
    REGISTRY.add("foundry_completion_tokens_total", labels, record.completion_tokens)
    if record.first_token_s is None:
        return
    observe_ttft(record.model_id, record.first_token_s)
    if record.completion_tokens > 1:
        gap = (record.total_s - record.first_token_s) / (record.completion_tokens - 1)
        REGISTRY.observe(
            "foundry_time_per_output_token_seconds", labels, max(0.0, gap), TOKEN_BUCKETS
        )


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REGISTRY.add(
        "foundry_requests_total", (("route", route), ("method", method), ("status", str(status)))
    )
    REGISTRY.observe(
        "foundry_request_duration_seconds", (("route", route),), seconds, DURATION_BUCKETS
    )


# --- exposition ---------------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return f"{{{inner}}}" if inner else ""


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(gauges: Mapping[str, Mapping[Labels, float]] | None = None) -> str:
    """The whole registry (plus scrape-time `gauges`, e.g. loaded models) as exposition text."""
    with REGISTRY.lock:
        values = {k: dict(v) for k, v in REGISTRY.values.items()}
        histograms = {
            k: {lbl: (h.buckets, list(h.counts), h.total, h.count) for lbl, h in v.items()}
            for k, v in REGISTRY.histograms.items()
        }
    for name, series in (gauges or {}).items():
        values.setdefault(name, {}).update(series)
    lines: list[str] = []
    for name in sorted({*values, *histograms}):
        kind, text = HELP.get(name, ("untyped", name))
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in sorted(values.get(name, {}).items()):
            lines.append(f"{name}{_labels(labels)} {_number(value)}")
        for labels, (buckets, counts, total, count) in sorted(histograms.get(name, {}).items()):
            for bound, cumulative in zip(buckets, counts, strict=True):
                lines.append(
                    f"{name}_bucket{_labels((*labels, ('le', _number(bound))))} {cumulative}"
                )
            lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {count}")
            lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
            lines.append(f"{name}_count{_labels(labels)} {count}")
    return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware: active requests, and requests by route template + status + duration."""

    def __init__(self, app: Any) -> None:
        # Litestar builds one instance per route, so in-flight counts live in the registry.
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        REGISTRY.add("foundry_active_requests", (), 1)
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            REGISTRY.add("foundry_active_requests", (), -1)
            route = scope.get("path_template") or "unmatched"
            observe_request(route, scope.get("method", ""), status, time.perf_counter() - started)
