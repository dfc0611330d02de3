"""This service against its peers on one model, each alone, alternated round by round.

    python benchmarks/bench_peers.py [--rounds 3] [--tokens 128]
        [--service-model ID --home DIR] [--gguf MODEL.gguf] [--llama-server PATH]

Peers, each started alone (the others stopped) and driven through its OpenAI-compatible
`/v1/completions`, streamed, `ignore_eos`, greedy:
* `service`: `foundry service start` as it ships (threads per machine, og.Generator per request);
* `service_batched`: the same with FOUNDRY_CHAT_BATCHING=continuous (batch.py, opt-in);
* `service_before`: the same with FOUNDRY_THREADS=1 and FOUNDRY_CHAT_BATCHING=generator (one
  og.Generator per request on onnxruntime's default single thread: the service before issue 13);
* `llama_server`: llama.cpp's server on `--gguf` (`-t N -tb N -np 8 -c 8192`), when
  `llama-server` is on PATH or given; skipped with a note otherwise. Never in CI;
* `direct_og`: onnxruntime-genai in this process at the service's thread count (single stream).
Without `--service-model` the service runs the synthetic Qwen2.5-0.5B-dimension cpu-int4 model
(common.synthetic_model), and llama-server needs a GGUF of the *same* checkpoint to compare.
Figures: decode tok/s (after the first token), time to first token at ~128 and ~1,024 prompt
tokens, aggregate tok/s and median time to first token at 4 and 8 clients; ratios against the
service. The 1-minute load average is recorded before every peer: llama.cpp collapses when
another process takes a core, so figures from a busy machine are marked `machine_quiet: false`.

Building llama-server (about 20 min on 2 quiet cores; needs cmake and ninja):
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
    cd llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    cmake --build build -j2 --target llama-server llama-quantize
Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from common import BENCH_HOME, SYNTHETIC_ID, synthetic_model, timed_greedy

WORDS = "the museum opens at nine and the guided tour of the east wing takes about ninety minutes"


def prompt_text(words: int) -> str:
    vocabulary = WORDS.split()
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


async def one_completion(client: httpx.AsyncClient, model: str, prompt: str, tokens: int) -> dict:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first = last = None
    pieces = 0
    usage: dict = {}
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            now = time.perf_counter()
            if '"usage":' in line and '"usage":null' not in line.replace(" ", ""):
                usage = json.loads(line[6:]).get("usage") or usage
            if '"text":' in line and '"text":""' not in line.replace(" ", ""):
                first = first or now
                last = now
                pieces += 1
    produced = int(usage.get("completion_tokens") or pieces)
    first = first or time.perf_counter()
    last = last or first
    return {
        "ttft_s": first - start,
        "decode_tps": (produced - 1) / (last - first) if last > first else 0.0,
        "tokens": produced,
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
    }


async def clients(base_url: str, model: str, count: int, prompt: str, tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=1200) as client:
        start = time.perf_counter()
        done = asyncio.Event()
        health = asyncio.create_task(health_latencies(client, done))
        runs = await asyncio.gather(
            *(one_completion(client, model, prompt, tokens) for _ in range(count))
        )
        wall = time.perf_counter() - start
        done.set()
        latencies = await health
    return {
        "aggregate_tps": sum(r["tokens"] for r in runs) / wall,
        "median_ttft_s": statistics.median(r["ttft_s"] for r in runs),
        "max_health_s": max(latencies, default=0.0),
    }


async def health_latencies(client: httpx.AsyncClient, done: asyncio.Event) -> list[float]:
    """/health round trips, twice a second, while the clients stream."""
    latencies = []
    while not done.is_set():
        start = time.perf_counter()
        await client.get("/health")
        latencies.append(time.perf_counter() - start)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.5)
    return latencies


def measure(base_url: str, model: str, args: argparse.Namespace) -> dict:
    short, long = prompt_text(args.short_words), prompt_text(args.long_words)

    def run(prompt: str, tokens: int) -> dict:
        async def single() -> dict:
            async with httpx.AsyncClient(base_url=base_url, timeout=1200) as client:
                return await one_completion(client, model, prompt, tokens)

        return asyncio.run(single())

    run(short, 4)  # warm-up
    alone = run(short, args.tokens)
    return {
        "decode_tps": alone["decode_tps"],
        "ttft_short_s": alone["ttft_s"],
        "prompt_tokens_short": alone["prompt_tokens"],
        "ttft_long_s": run(long, 2)["ttft_s"],
        **{
            f"{key}_{n}": value
            for n in (1, 4, 8)
            for key, value in asyncio.run(clients(base_url, model, n, short, args.tokens)).items()
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(base_url: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{base_url} did not become healthy in {seconds:.0f}s")


@contextlib.contextmanager
def foundry_service(home: Path, model: str, extra_env: dict[str, str]) -> Iterator[str]:
    foundry = str(Path(sys.executable).with_name("foundry"))
    env = {**os.environ, "FOUNDRY_HOME": str(home), **extra_env}
    env.pop("FOUNDRY_API_KEY", None)
    subprocess.run([foundry, "service", "stop"], env=env, capture_output=True)
    subprocess.run([foundry, "service", "start"], env=env, check=True, capture_output=True)
    base_url = "http://127.0.0.1:{port}".format(**json.loads((home / "service.json").read_text()))
    try:
        httpx.get(f"{base_url}/openai/load/{model}", timeout=600).raise_for_status()
        yield base_url
    finally:
        subprocess.run([foundry, "service", "stop"], env=env, capture_output=True)


@contextlib.contextmanager
def llama_server(binary: str, gguf: Path, threads: int) -> Iterator[str]:
    port = free_port()
    command = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-t", str(threads), "-tb", str(threads), "-np", "8", "-c", "8192"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def direct_og(artifact: Path, threads: int, args: argparse.Namespace) -> dict:
    import onnxruntime_genai as og
    from tokenizers import Tokenizer

    config = og.Config(str(artifact))
    options = {"session_options": {"intra_op_num_threads": threads}}
    config.overlay(json.dumps({"model": {"decoder": options}}))
    model = og.Model(config)
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    short = tokenizer.encode(prompt_text(args.short_words)).ids
    long = tokenizer.encode(prompt_text(args.long_words)).ids
    timed_greedy(model, short, 4)
    alone = timed_greedy(model, short, args.tokens)
    return {
        "decode_tps": alone["decode_tps"],
        "ttft_short_s": alone["ttft_s"],
        "ttft_long_s": timed_greedy(model, long, 2)["ttft_s"],
    }


def read_bandwidth(threads: int, mib: int = 1024, repeats: int = 5) -> float:
    """Bytes per second `threads` threads read from RAM (numpy sums over a buffer > the caches).

    The best of `repeats`: the machine's limit, not its average under whoever else runs.
    """
    import concurrent.futures

    import numpy as np

    data = np.ones(mib * 2**20 // 8, dtype=np.float64)
    parts = np.array_split(data, threads)
    best = 0.0
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))  # np.sum lets go of the GIL
            best = max(best, data.nbytes / (time.perf_counter() - start))
    return best


def hardware_limit(artifact: Path, threads: int, prompt_tokens: int, decode_tps: float) -> dict:
    """Decode's ceiling: every weight byte and the KV held are read once per token."""
    from runtime.engines.prefix_cache import kv_bytes_per_token

    weights = sum(f.stat().st_size for f in artifact.iterdir() if f.name.startswith("model.onnx"))
    per_token = weights + kv_bytes_per_token(artifact) * (prompt_tokens + 64)
    bandwidth = read_bandwidth(threads)
    limit = bandwidth / per_token
    return {
        "read_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "bytes_read_per_token_mb": round(per_token / 1e6, 1),
        "limit_tps": round(limit, 1),
        "service_decode_fraction_of_limit": round(decode_tps / limit, 3) if decode_tps else None,
    }


def fitted_words(artifact: Path, tokens: int) -> int:
    """How many prompt words make about `tokens` tokens in this artifact's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    per_word = len(tokenizer.encode(prompt_text(1000)).ids) / 1000
    return max(1, round(tokens / per_word))


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--short-tokens", type=int, default=128, help="about; words are fitted")
    parser.add_argument("--long-tokens", type=int, default=1024, help="about; words are fitted")
    parser.add_argument("--service-model", help="model id in --home (default: the synthetic)")
    parser.add_argument("--home", type=Path, default=BENCH_HOME, help="FOUNDRY_HOME to serve")
    parser.add_argument("--gguf", type=Path, help="the same checkpoint as GGUF, for llama-server")
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument(
        "--peers", default="service,service_batched,service_before,llama_server,direct_og"
    )
    args = parser.parse_args()
    from runtime.engines.threads import session_threads
    from runtime.store import Store

    threads = session_threads().intra_op
    model = args.service_model or SYNTHETIC_ID
    cached = synthetic_model(args.home) if not args.service_model else None
    artifact = (cached or Store(args.home / "cache").resolve(model)).path
    args.short_words = fitted_words(artifact, args.short_tokens)
    args.long_words = fitted_words(artifact, args.long_tokens)
    wanted = args.peers.split(",")
    notes = []
    if "llama_server" in wanted and not (args.llama_server and args.gguf):
        wanted.remove("llama_server")
        notes.append(
            "llama_server skipped: needs llama-server on PATH (or --llama-server) and --gguf"
        )
    peers = {
        "service": lambda: foundry_service(args.home, model, {}),
        "service_batched": lambda: foundry_service(
            args.home, model, {"FOUNDRY_CHAT_BATCHING": "continuous"}
        ),
        "service_before": lambda: foundry_service(
            args.home, model, {"FOUNDRY_THREADS": "1", "FOUNDRY_CHAT_BATCHING": "generator"}
        ),
        "llama_server": lambda: llama_server(args.llama_server, args.gguf, threads),
    }
    runs: dict[str, list[dict]] = {name: [] for name in wanted}
    for _ in range(args.rounds):
        for name in wanted:
            load = load_average()
            if name == "direct_og":
                figures = direct_og(artifact, threads, args)
            else:
                with peers[name]() as base_url:
                    figures = measure(base_url, "" if name == "llama_server" else model, args)
            runs[name].append({**figures, "load_average_1m": load})
            print(f"{name}: {json.dumps(runs[name][-1])}", file=sys.stderr)
    result = report(runs, threads, model, notes)
    service = result["medians"].get("service", {})
    result["hardware_limit"] = hardware_limit(
        artifact,
        threads,
        int(service.get("prompt_tokens_short") or 128),
        service.get("decode_tps", 0),
    )
    print(json.dumps(result, indent=2))


def report(runs: dict[str, list[dict]], threads: int, model: str, notes: list[str]) -> dict:
    cores = os.cpu_count() or 1
    medians = {
        name: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
        for name, rows in runs.items()
        if rows
    }
    ratios = {}
    base = medians.get("service", {})
    for name, figures in medians.items():
        if name == "service":
            continue
        ratios[f"service_over_{name}"] = {
            key: round(base[key] / value, 3)
            for key, value in figures.items()
            if key in base and value and key != "load_average_1m"
        }
    loads = [r["load_average_1m"] for rows in runs.values() for r in rows]
    return {
        "model": model,
        "threads": threads,
        "rounds": len(next(iter(runs.values()), [])),
        "machine_quiet": max(loads, default=0) < 0.5 * cores,
        "load_average_1m": [min(loads, default=0), max(loads, default=0)],
        "medians": medians,
        "ratios": ratios,
        "notes": [*notes, "ttft ratios below 1 and tps ratios above 1 favour the service"],
    }


if __name__ == "__main__":
    main()
