"""What several benchmarks share: the synthetic model, a timed greedy decode, a timed stream.

Scripts run as `python benchmarks/bench_x.py`, so `benchmarks/` is on `sys.path` and they
`from common import ...`. One place builds the artifact (so every benchmark measures the same
files, built once into one private FOUNDRY_HOME), one place times an og.Generator and one place
times a streamed OpenAI request (so "time to first token" and "decode tok/s" mean the same
thing in every script's JSON, served or direct).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import onnxruntime_genai as og

# The benchmarks' own FOUNDRY_HOME: kept between runs so the ~2 min build happens once.
BENCH_HOME = Path(
    os.environ.get("BENCH_HOME", Path.home() / ".cache" / "foundry-bench" / "serve-home")
)
SYNTHETIC_ID = "bench-qwen2.5-0.5b-int4"
T = TypeVar("T")


def bin_path(name: str) -> str:
    """A console script (`foundry`, `foundry-build`) of the venv running this benchmark."""
    return str(Path(sys.executable).with_name(name))


def synthetic_model(
    home: Path = BENCH_HOME,
    model_id: str = SYNTHETIC_ID,
    target: str = "cpu-int4",
    builder: dict[str, Any] | None = None,
) -> Any:
    """The Qwen2.5-0.5B-dimension synthetic model (real sizes, random weights), as a CachedModel.

    What `foundry-build qwen2.5-0.5b --synthetic --target TARGET --as MODEL_ID` registers in
    FOUNDRY_HOME=`home`, built in-process by the same compiler functions. `builder` overrides
    options of the recipe target's builder (e.g. `{"prune_lm_head": False}`); that changes the
    build key, so it is a separate artifact. A model id already in the store is reused as is;
    otherwise an unchanged build key is a cache hit (registered under the new id, not rebuilt).
    """
    from runtime.store import Store

    store = Store(home / "cache")
    if not store.has(model_id):
        with _foundry_home(home):
            _build(store, model_id, target, builder or {})
    return store.resolve(model_id)


def _build(store: Any, model_id: str, target_name: str, builder: dict[str, Any]) -> None:
    import msgspec

    from compiler.build import BuildPlan, BuildRequest, build_target, open_source, plan_target
    from compiler.build_key import build_key
    from compiler.pack import tool_versions
    from compiler.recipe import load_recipes
    from runtime.progress import silent

    request = BuildRequest("qwen2.5-0.5b", [target_name], model_id=model_id, synthetic=True)
    with open_source(request, store, silent) as source:
        plan = plan_target(request, source, target_name, load_recipes(), store)
        if builder:
            options = dict(plan.target.options)
            options["builder"] = {**options.get("builder", {}), **builder}
            target = msgspec.structs.replace(plan.target, options=options)
            key = build_key(source.digest, plan.recipe.recipe.name, target, tool_versions())
            plan = BuildPlan(model_id, plan.target_name, target, plan.recipe, key, False)
        started = time.perf_counter()
        result = build_target(plan, source, store, silent)
    how = "cache hit" if result.cache_hit else "built"
    print(f"{how} {model_id} in {time.perf_counter() - started:.0f}s", file=sys.stderr)


@contextlib.contextmanager
def _foundry_home(home: Path) -> Iterator[None]:
    """The compiler reads FOUNDRY_HOME (e.g. its file-digest cache) at call time."""
    before = os.environ.get("FOUNDRY_HOME")
    os.environ["FOUNDRY_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FOUNDRY_HOME", None)
        else:
            os.environ["FOUNDRY_HOME"] = before


def timed_greedy(
    model: og.Model,
    prompt: Sequence[int] | np.ndarray,
    tokens: int,
    params_hook: Callable[[og.GeneratorParams], None] | None = None,
    *,
    fixed_length: bool = True,
    since: float | None = None,
) -> dict[str, float]:
    """One greedy generation of up to `tokens` tokens on a fresh og.Generator, timed.

    `prompt` is token ids (list or int32 array). The clock starts at `since` if given (e.g. a
    request's arrival, so waiting for the GIL counts), else right before the prompt is appended;
    the first `generate_next_token` ends the time to first token; the rest is decode.
    `fixed_length` sets min_length so EOS cannot end the run early; `params_hook` may change the
    params (e.g. set guidance) before the generator is created.
    Returns ttft_s, decode_s, decode_tps (tokens after the first per decode second), tokens.
    """
    params = og.GeneratorParams(model)
    total = len(prompt) + tokens
    if fixed_length:
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
    else:
        params.set_search_options(do_sample=False, max_length=total)
    if params_hook:
        params_hook(params)
    generator = og.Generator(model, params)
    start = time.perf_counter() if since is None else since
    generator.append_tokens(np.asarray(prompt, dtype=np.int32))
    generator.generate_next_token()
    first = time.perf_counter()
    produced = 1
    while not generator.is_done() and produced < tokens:
        generator.generate_next_token()
        produced += 1
    decode = time.perf_counter() - first
    return {
        "ttft_s": first - start,
        "decode_s": decode,
        "decode_tps": (produced - 1) / decode if decode > 0 else 0.0,
        "tokens": produced,
    }


async def timed_stream(base_url: str, path: str, body: dict[str, Any]) -> dict:
    """One streamed OpenAI request (`/v1/completions` or `/v1/chat/completions`), timed.

    The first event carrying text ends the time to first token (a chat's role chunk does not);
    decode tok/s is the tokens after the first over the time from first to last text event.
    Only the usage event is parsed: on 2 shared cores a client decoding every event's JSON takes
    CPU from the generation it is timing. Without usage, text events are counted as tokens.
    """
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    pieces = 0
    usage: dict[str, Any] = {}
    async for data in sse_events(base_url, path, body):
        if data == b"[DONE]":
            continue
        now = time.perf_counter()
        compact = data.replace(b" ", b"")
        if b'"usage":{' in compact:
            usage = json.loads(data).get("usage") or usage
        if any(k in compact and e not in compact for k, e in _TEXT_KEYS):
            first = first or now
            last = now
            pieces += 1
    end = time.perf_counter()
    produced = int(usage.get("completion_tokens") or pieces)
    first = first or end
    last = last or first
    return {
        "ttft_s": first - start,
        "decode_tps": (produced - 1) / (last - first) if last > first else 0.0,
        "tokens": produced,
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "wall_s": end - start,
    }


def run_client(coro: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark client on uvloop (installed with the runtime): on 2 shared cores the
    client's CPU per token is taken from the server it times (measured 0.20 -> 0.17 ms)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def sse_events(base_url: str, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
    """POST `body` as JSON and yield each server-sent event's `data`, read off a bare socket.

    Not httpx: on this 2-core machine its per-chunk layers (httpcore, h11, anyio, line
    decoding) took ~0.34 ms of CPU a token (measured from /proc, stop 20) from the server being
    timed, which spins on both cores; this reader takes a read and a split per event. The same
    reader times every peer. HTTP/1.1, one connection per request, chunked or until close.
    """
    url = urllib.parse.urlsplit(base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + payload)
    try:
        headers = await reader.readuntil(b"\r\n\r\n")
        status = int(headers.split(b" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {(await reader.read(2000))!r}")
        pending = b""
        async for data in _body(reader, b"transfer-encoding: chunked" in headers.lower()):
            *events, pending = (pending + data).replace(b"\r\n", b"\n").split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        yield line[5:].strip()
    finally:
        writer.close()


async def _body(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The response body as the server wrote it: chunk by chunk, or reads until close."""
    while True:
        if not chunked:
            data = await reader.read(65536)
            if not data:
                return
            yield data
            continue
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return
        yield (await reader.readexactly(size + 2))[:-2]


_TEXT_KEYS = tuple((f'"{k}":"'.encode(), f'"{k}":""'.encode()) for k in ("text", "content"))


async def concurrent_streams(
    base_url: str, path: str, bodies: Sequence[dict[str, Any]], health: bool = True
) -> dict:
    """`bodies` streamed at once; aggregate tok/s, median first token, slowest `/health`.

    `/health` is polled twice a second while they run (the event loop must stay responsive).
    """
    async with httpx.AsyncClient(base_url=base_url, timeout=1800) as client:
        done = asyncio.Event()
        poller = asyncio.create_task(_health_latencies(client, done)) if health else None
        start = time.perf_counter()
        runs = await asyncio.gather(*(timed_stream(base_url, path, body) for body in bodies))
        wall = time.perf_counter() - start
        done.set()
        latencies = await poller if poller else []
    return {
        "aggregate_tps": sum(r["tokens"] for r in runs) / wall,
        "median_ttft_s": statistics.median(r["ttft_s"] for r in runs),
        "max_health_s": max(latencies, default=0.0),
        "wall_s": wall,
        "tokens": sum(r["tokens"] for r in runs),
    }


async def _health_latencies(client: httpx.AsyncClient, done: asyncio.Event) -> list[float]:
    latencies = []
    while not done.is_set():
        start = time.perf_counter()
        await client.get("/health")
        latencies.append(time.perf_counter() - start)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)
    return latencies


def load_average() -> float:
    """The 1-minute load average (benchmarks record it: on 2 shared cores it is the noise)."""
    return os.getloadavg()[0]
