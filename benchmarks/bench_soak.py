"""Soak: N streaming chat clients for M minutes against the real service on loopback.

    python benchmarks/bench_soak.py [--clients 4] [--minutes 2] [--max-tokens 32] [--model ID]

Starts `foundry service start` in its own FOUNDRY_HOME (default ~/.cache/foundry-bench/soak-home,
`--home`), with a tiny synthetic chat model built there once (`foundry-build qwen2.5-0.5b
--synthetic --layers 2 --hidden 64 --target cpu-fp32`) unless `--model` names one already in that
store. Every client streams greedy chat completions back to back until the time is up; each
request is bounded (`--request-timeout`). Prints one JSON object: requests, tokens, errors (any
failure but the service's intended 429s, which are counted apart), latency percentiles, and the
service's RSS (VmRSS of its pid) after the warm-up, at the middle and at the end. `rss_drift_ok`
holds when end - start stays within `--rss-drift-mb` (default 64 MiB: allocator noise on a tiny
model is a few MiB; a per-request leak of 10 KiB over a 2-minute run at ~20 req/s is ~25 MiB more).
A benchmark, not a test: nothing here asserts on wall-clock time; the exit code is 1 when errors
or the drift bound say the run was not clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from common import bin_path

DEFAULT_HOME = Path.home() / ".cache" / "foundry-bench" / "soak-home"
TINY_MODEL = "soak-tiny-qwen"


def ensure_tiny_model(home: Path, env: dict[str, str]) -> str:
    """The tiny synthetic chat model in `home`'s store, built there on the first run."""
    if (home / "cache" / "refs" / TINY_MODEL).exists():
        return TINY_MODEL
    argv = [bin_path("foundry-build"), "qwen2.5-0.5b", "--synthetic", "--layers", "2"]
    argv += ["--hidden", "64", "--target", "cpu-fp32", "--as", TINY_MODEL]
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return TINY_MODEL


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def one_stream(client: httpx.AsyncClient, body: dict[str, Any], timeout: float) -> dict:
    """One streamed chat completion: ("ok" | "429" | "error"), tokens, latency, first-token time."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code == 429:
                    await response.aread()
                    return {"outcome": "429", "latency": time.perf_counter() - started}
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")[:200]
                    return {"outcome": "error", "detail": f"{response.status_code}: {text}"}
                done = False
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        tokens = int(chunk["usage"]["completion_tokens"])
                    elif first is None and chunk.get("choices"):
                        first = time.perf_counter() - started
                if not done:
                    return {"outcome": "error", "detail": "stream ended without [DONE]"}
    except (TimeoutError, httpx.HTTPError) as exc:
        return {"outcome": "error", "detail": f"{type(exc).__name__}: {exc}"}
    return {
        "outcome": "ok",
        "tokens": tokens,
        "latency": time.perf_counter() - started,
        "ttft": first if first is not None else time.perf_counter() - started,
    }


async def soak(base_url: str, pid: int, args: argparse.Namespace, model: str) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    results: list[dict] = []
    rss = {"start": rss_mib(pid)}
    deadline = time.monotonic() + 60 * args.minutes
    middle = time.monotonic() + 30 * args.minutes

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=args.request_timeout) as client:
            while time.monotonic() < deadline:
                results.append(await one_stream(client, body, args.request_timeout))

    async def sample_middle() -> None:
        await asyncio.sleep(max(0.0, middle - time.monotonic()))
        rss["middle"] = rss_mib(pid)

    await asyncio.gather(sample_middle(), *(client_loop() for _ in range(args.clients)))
    rss["end"] = rss_mib(pid)
    return summarize(results, rss, args)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(results: list[dict], rss: dict[str, float], args: argparse.Namespace) -> dict:
    ok = [r for r in results if r["outcome"] == "ok"]
    errors = [r for r in results if r["outcome"] == "error"]
    latencies = [r["latency"] for r in ok]
    drift = rss["end"] - rss["start"]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "clients": args.clients,
        "minutes": args.minutes,
        "max_tokens": args.max_tokens,
        "requests": len(results),
        "completed": len(ok),
        "tokens": tokens,
        "tokens_per_s": round(tokens / (60 * args.minutes), 1),
        "errors": len(errors),
        "error_samples": sorted({e["detail"] for e in errors})[:5],
        "rate_limited_429": sum(r["outcome"] == "429" for r in results),
        "latency_s": {
            "p50": _round(statistics.median(latencies) if latencies else None),
            "p95": _round(percentile(latencies, 0.95)),
            "max": _round(max(latencies) if latencies else None),
        },
        "ttft_s_p95": _round(percentile([r["ttft"] for r in ok], 0.95)),
        "rss_mib": {k: round(v, 1) for k, v in rss.items()},
        "rss_drift_mib": round(drift, 1),
        "rss_drift_bound_mib": args.rss_drift_mb,
        "rss_drift_ok": drift <= args.rss_drift_mb,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--request-timeout", type=float, default=120.0)
    parser.add_argument("--rss-drift-mb", type=float, default=64.0)
    parser.add_argument("--warmup", type=int, default=8, help="requests before RSS 'start'")
    parser.add_argument("--model", default=None, help="a chat model id in --home's store")
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME)
    args = parser.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "FOUNDRY_API_KEY"}
    env["FOUNDRY_HOME"] = str(args.home)
    model = args.model or ensure_tiny_model(args.home, env)
    foundry = bin_path("foundry")
    subprocess.run([foundry, "service", "stop"], env=env, capture_output=True)
    subprocess.run([foundry, "service", "start"], env=env, check=True, capture_output=True)
    state = json.loads((args.home / "service.json").read_text())
    base_url = f"http://127.0.0.1:{state['port']}"
    try:
        httpx.post(f"{base_url}/openai/load/{model}", timeout=600).raise_for_status()

        async def warm() -> None:
            async with httpx.AsyncClient(base_url=base_url, timeout=args.request_timeout) as c:
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": args.max_tokens,
                    "temperature": 0,
                    "stream": True,
                }
                for _ in range(args.warmup):
                    await one_stream(c, body, args.request_timeout)

        asyncio.run(warm())
        result = {"model": model, **asyncio.run(soak(base_url, state["pid"], args, model))}
        result["health_after"] = httpx.get(f"{base_url}/health", timeout=10).status_code
    finally:
        subprocess.run([foundry, "service", "stop"], env=env, capture_output=True)
    print(json.dumps(result, indent=2))
    clean = result["errors"] == 0 and result["rss_drift_ok"] and result["health_after"] == 200
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
