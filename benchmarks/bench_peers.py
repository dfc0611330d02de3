"""This service against its peers on one model, each alone, alternated round by round.

    python benchmarks/bench_peers.py [--rounds 3] [--tokens 128]
        [--service-model ID --home DIR] [--gguf MODEL.gguf] [--llama-server PATH]

Peers, each started alone (the others stopped) and driven through its OpenAI-compatible
`/v1/completions`, streamed, `ignore_eos`, greedy:
* `service`: `foundry service start` as it ships (threads per machine, the continuous batch,
  the one chat strategy since issue 13 removed FOUNDRY_CHAT_BATCHING's og paths);
* `service_1thread`: the same with FOUNDRY_THREADS=1 (onnxruntime's default on this VM);
* `service_no_huge_pages`: the same with FOUNDRY_HUGE_PAGES=0 (malloc on 4 KiB pages);
* `llama_server`: llama.cpp's server on `--gguf` (`-t N -tb N -np 8 -c 8192`), as its users run
  it, when `llama-server` is on PATH or given; skipped with a note otherwise. Never in CI;
* `llama_server_huge_pages`: the same with the service's malloc setting (glibc.malloc.hugetlb=1);
* `direct_og`: onnxruntime-genai in a fresh process at the service's thread count and malloc
  setting (single stream), so service / og is the cost of serving alone.
Without `--service-model` the service runs the synthetic Qwen2.5-0.5B-dimension cpu-int4 model
(common.synthetic_model, built into --home): the variant for machines without real weights,
where llama-server is skipped (it needs a GGUF of the *same* checkpoint). With real weights,
e.g. SmolLM2-135M-Instruct: `foundry-build X.Q4_1.gguf --target cpu-int4 --as smollm2` into
--home, then `--service-model smollm2 --gguf X.Q4_1.gguf` (llama-server runs the Q4_1 file
itself; ours is dequantized and requantized by the compiler). Every request's prompt starts with
its own number, so neither server times a prefix-cache hit.
After the rounds, `session_ceiling` (ceiling.py) times the bare onnxruntime session the service
drives (prefill, and decode steps at 1, 4 and 8 rows) and prints the aggregates a scheduler with
no cost at all could reach, so the 4-client scaling reads against what the kernels allow.
Figures: decode tok/s (after the first token), time to first token at ~128 and ~1,024 prompt
tokens, aggregate tok/s and median time to first token at 4 and 8 clients (after an untimed
first burst of 8, reported apart as `aggregate_tps_8_first_burst`: a row's KV pages fault in
on its first use); ratios against the service, of the medians and round by round. The 1-minute
load average is recorded before every peer: llama.cpp collapses when another process takes a
core, so figures from a busy machine are marked `machine_quiet: false`.

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
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from ceiling import session_ceiling
from common import (
    BENCH_HOME,
    SYNTHETIC_ID,
    bin_path,
    concurrent_streams,
    load_average,
    run_client,
    synthetic_model,
    timed_greedy,
    timed_stream,
)

WORDS = "the museum opens at nine and the guided tour of the east wing takes about ninety minutes"


def prompt_text(words: int, request: int = 0) -> str:
    """`words` words, led by the request's number so no two requests share a prefix.

    Both servers keep a finished request's KV for the next one that starts the same way
    (llama-server's `cache_prompt`, our prefix reuse): a repeated prompt would time a cache
    hit, not a prefill.
    """
    vocabulary = WORDS.split()
    return f"{request}: " + " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


class Prompts:
    """Completion bodies for one peer, each with a fresh leading number."""

    def __init__(self, model: str, tokens: int):
        self.model, self.tokens, self.count = model, tokens, 0

    def body(self, words: int, tokens: int | None = None) -> dict:
        self.count += 1
        return {
            "model": self.model,
            "prompt": prompt_text(words, self.count),
            "max_tokens": tokens or self.tokens,
            "temperature": 0,
            "ignore_eos": True,
        }


def measure(base_url: str, model: str, args: argparse.Namespace, pid: int | None = None) -> dict:
    """The peer's figures; with the service's `pid`, also its event loop's CPU per token."""
    prompts = Prompts(model, args.tokens)

    def single(words: int, tokens: int | None = None) -> dict:
        return run_client(timed_stream(base_url, "/v1/completions", prompts.body(words, tokens)))

    single(args.short_words, 4)  # warm-up
    status = httpx.get(f"{base_url}/openai/status", timeout=30)  # llama-server: 404
    spinning = status.json()["threads"]["spinning"] if status.status_code == 200 else {}
    loop_before = main_thread_cpu_s(pid) if pid else 0.0
    alone = single(args.short_words)
    loop_s = main_thread_cpu_s(pid) - loop_before if pid else 0.0
    long = single(args.long_words, 2)
    figures = {
        "decode_tps": alone["decode_tps"],
        "ttft_short_s": alone["ttft_s"],
        "prompt_tokens_short": alone["prompt_tokens"],
        "ttft_long_s": long["ttft_s"],
        "prompt_tokens_long": long["prompt_tokens"],
    }
    if pid:  # the CPU the loop takes from the decode threads on these cores (0.01 s ticks)
        figures["event_loop_ms_per_token"] = 1000 * loop_s / max(alone["tokens"], 1)
    if model in spinning:  # this service's own threads.spinning_wanted() choice at load
        figures["spinning"] = spinning[model]
    # The first burst of 8 after the long prompt, timed apart: a server that maps its KV rows
    # as clients first need them pays the page faults here, once (on this session's VM a
    # first touch cost ~1.8 s a GiB); llama-server clears its whole cache before serving.
    bodies = [prompts.body(args.short_words) for _ in range(8)]
    first = run_client(concurrent_streams(base_url, "/v1/completions", bodies, health=False))
    figures["aggregate_tps_8_first_burst"] = first["aggregate_tps"]
    for n in (1, 4, 8):
        bodies = [prompts.body(args.short_words) for _ in range(n)]
        run = run_client(concurrent_streams(base_url, "/v1/completions", bodies))
        figures |= {f"{key}_{n}": run[key] for key in ("aggregate_tps", "median_ttft_s")}
        figures[f"max_health_s_{n}"] = run["max_health_s"]
    return figures


def main_thread_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`'s main thread: uvicorn's event loop runs there, the
    generation in other threads."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    base_url: str,
    seconds: float = 600,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Until `/health` answers 200; a server process that dies meanwhile ends the run at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log else ""
            raise SystemExit(f"{base_url} exited with {process.returncode} before serving:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise SystemExit(f"{base_url} did not become healthy in {seconds:.0f}s")


def _service_state(home: Path) -> dict:
    """The running service's state file (`runtime/service/state.py` writes it)."""
    return dict(json.loads((home / "service.json").read_text()))


def service_pid(home: Path) -> int:
    return int(_service_state(home)["pid"])


@contextlib.contextmanager
def foundry_service(home: Path, model: str, extra_env: dict[str, str]) -> Iterator[str]:
    foundry = bin_path("foundry")
    env = {**os.environ, "FOUNDRY_HOME": str(home), **extra_env}
    env.pop("FOUNDRY_API_KEY", None)
    subprocess.run([foundry, "service", "stop"], env=env, capture_output=True)
    subprocess.run([foundry, "service", "start"], env=env, check=True, capture_output=True)
    base_url = f"http://127.0.0.1:{_service_state(home)['port']}"
    try:
        httpx.get(f"{base_url}/openai/load/{model}", timeout=600).raise_for_status()
        yield base_url
    finally:
        subprocess.run([foundry, "service", "stop"], env=env, capture_output=True)


@contextlib.contextmanager
def llama_server(
    binary: str,
    gguf: Path,
    threads: int,
    parallel: int,
    extra: list[str],
    environ: dict[str, str] | None = None,
) -> Iterator[str]:
    """llama-server on `gguf`, `-t/-tb threads -np parallel -c 8192` (the issue's settings)."""
    port = free_port()
    command = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-t", str(threads), "-tb", str(threads), "-np", str(parallel), "-c", "8192"]
    command += extra
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-llama-server-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environ)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process=process, log=log)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


def in_fresh_process(function: Callable[..., dict], *args: Any) -> dict:
    """`function(*args)` in a new interpreter, as each server peer runs in its own process.

    On this VM one process's weights decode up to 20 % faster or slower than another's, the
    same files (memory placement; steady within a process): og timed inside this long-lived
    process, round after round, did not draw that lot as the service did. Its malloc asks for
    huge pages as the service's does (the launcher's `with_huge_pages`; read at exec).
    """
    import concurrent.futures
    import multiprocessing

    from runtime.engines.huge_pages import with_huge_pages

    context = multiprocessing.get_context("spawn")
    before = dict(os.environ)
    os.environ.update(with_huge_pages(before))
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(function, *args).result()
    finally:
        os.environ.clear()
        os.environ.update(before)


def direct_og(artifact: Path, threads: int, args: argparse.Namespace) -> dict:
    import onnxruntime_genai as og
    from tokenizers import Tokenizer

    config = og.Config(str(artifact))
    options = {"session_options": {"intra_op_num_threads": threads}}
    config.overlay(json.dumps({"model": {"decoder": options}}))
    model = og.Model(config)
    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    short = tokenizer.encode(prompt_text(args.short_words, 1)).ids
    long = tokenizer.encode(prompt_text(args.long_words, 2)).ids
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


def against_ceiling(service: dict, scaling: dict, ceiling: dict) -> dict:
    """The service's aggregates as fractions of what the bare session allows, and its
    scaling (report's `service_scaling`) beside the ideal one."""
    if not service.get("aggregate_tps_1"):
        return {}
    fractions = {
        f"aggregate_tps_{n}": round(
            service[f"aggregate_tps_{n}"] / ceiling[f"ideal_aggregate_tps_{n}"], 3
        )
        for n in (1, 4, 8)
    }
    beside = {
        key: {"service": value, "ideal": ceiling[f"ideal_{key}"]} for key, value in scaling.items()
    }
    return {"service_over_ceiling": fractions, "scaling_service_vs_ideal": beside}


def fitted_words(artifact: Path, tokens: int) -> int:
    """How many prompt words make about `tokens` tokens in this artifact's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    per_word = len(tokenizer.encode(prompt_text(1000)).ids) / 1000
    return max(1, round(tokens / per_word))


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
    parser.add_argument("--llama-parallel", type=int, default=4, help="llama-server's -np")
    parser.add_argument(
        "--llama-extra",
        default="",
        help="more llama-server arguments, e.g. '--no-repack' where its repacked (AMX) "
        "kernels die with SIGILL (this VM advertises AMX; llama-server 0c1e570 -DGGML_NATIVE=ON)",
    )
    parser.add_argument(
        "--peers",
        default="service,llama_server,direct_og",
        help="of service, service_1thread, service_no_huge_pages, llama_server, "
        "llama_server_huge_pages, direct_og",
    )
    args = parser.parse_args()
    # A killed run still stops the server it started (the context managers' finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from runtime.engines.huge_pages import with_huge_pages
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
    for llama in ("llama_server", "llama_server_huge_pages"):
        if llama in wanted and not (args.llama_server and args.gguf):
            wanted.remove(llama)
            notes.append(
                f"{llama} skipped: needs llama-server on PATH (or --llama-server) and --gguf"
            )
    peers = {
        "service": lambda: foundry_service(args.home, model, {}),
        "service_1thread": lambda: foundry_service(args.home, model, {"FOUNDRY_THREADS": "1"}),
        "service_no_huge_pages": lambda: foundry_service(
            args.home, model, {"FOUNDRY_HUGE_PAGES": "0"}
        ),
        "llama_server": lambda: llama_server(
            args.llama_server, args.gguf, threads, args.llama_parallel, args.llama_extra.split()
        ),
        "llama_server_huge_pages": lambda: llama_server(
            args.llama_server,
            args.gguf,
            threads,
            args.llama_parallel,
            args.llama_extra.split(),
            with_huge_pages(os.environ),
        ),
    }
    print(f"load average before the run: {os.getloadavg()}", file=sys.stderr)
    runs: dict[str, list[dict]] = {name: [] for name in wanted}
    for round_index in range(args.rounds):
        # Odd rounds run the peers in reverse, so a machine that drifts faster or slower
        # through the run (these VMs do, by 15 % within minutes) favours no peer.
        for name in wanted if round_index % 2 == 0 else wanted[::-1]:
            with OthersCpu() as others:
                if name == "direct_og":
                    figures = in_fresh_process(direct_og, artifact, threads, args)
                else:
                    with peers[name]() as base_url:
                        pid = None if name.startswith("llama_server") else service_pid(args.home)
                        if pid:
                            others.own(pid)
                        figures = measure(base_url, model if pid else "", args, pid)
            runs[name].append({**figures, **others.figures})
            print(f"{name}: {json.dumps(runs[name][-1])}", file=sys.stderr)
    result = report(runs, threads, model, notes)
    result["readings"] = runs  # every round's figures, for a second look at the drift
    result["service_artifact"] = str(artifact)
    result["llama_server_gguf"] = (
        str(args.gguf) if any(n.startswith("llama_server") for n in wanted) else None
    )
    result["command"] = " ".join(sys.argv)
    service = result["medians"].get("service", {})
    with OthersCpu() as others:
        ceiling = session_ceiling(artifact, prompt_text(args.short_words, 1), args.tokens)
    result["session_ceiling"] = {**ceiling, **others.figures}
    scaling = result["ratios"].get("service_scaling", {})
    result["ratios"] |= against_ceiling(service, scaling, ceiling)
    result["hardware_limit"] = hardware_limit(
        artifact,
        threads,
        int(service.get("prompt_tokens_short") or 128),
        service.get("decode_tps", 0),
    )
    print(json.dumps(result, indent=2))


class OthersCpu:
    """How busy the machine was during a measurement, apart from the benchmark itself.

    Two shares of all cores over the measurement: `others_nice_cpu_share`, /proc/stat's `nice`
    time (the other tenants of this shared machine run at nice 19), and `others_cpu_share`,
    the CPU time of every process outside this benchmark's own tree (a test suite or a build
    at normal priority; processes that start and end inside the measurement are missed, so it
    is a lower bound). Also the 1-minute load average at the start and the end. A server the
    benchmark starts detached (`foundry service start` re-parents it to init) is ours once
    `own(pid)` says so: else a service still shutting down counts its whole life as others'.
    """

    def __init__(self) -> None:
        self._ours = {os.getpid()}

    def own(self, pid: int) -> None:
        self._ours.add(pid)

    def __enter__(self) -> OthersCpu:
        self._start, self._load = _cpu_times(), load_average()
        self._others = _others_jiffies(self._ours)
        return self

    def __exit__(self, *exc: object) -> None:
        end, others = _cpu_times(), _others_jiffies(self._ours)
        total = sum(end) - sum(self._start)
        outside = sum(t - self._others.get(pid, 0) for pid, t in others.items())
        self.figures = {
            "others_nice_cpu_share": round((end[1] - self._start[1]) / total, 3) if total else 0.0,
            "others_cpu_share": round(outside / total, 3) if total else 0.0,
            "load_average_1m": round(max(self._load, load_average()), 2),
        }


def _cpu_times() -> list[int]:
    """user, nice, system, idle, iowait, irq, softirq, steal jiffies of all CPUs."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]


def _others_jiffies(ours: set[int]) -> dict[int, int]:
    """utime + stime of every process not in `ours` or their descendants, by pid."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (parent, jiffies)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    ours, grown = set(ours), True
    while grown:
        more = {pid for pid, (parent, _) in stats.items() if parent in ours} - ours
        ours |= more
        grown = bool(more)
    return {pid: jiffies for pid, (_, jiffies) in stats.items() if pid not in ours}


_NOT_RATIOS = {
    "load_average_1m",
    "others_nice_cpu_share",
    "others_cpu_share",
    "prompt_tokens_short",
    "spinning",
}


def _ratios(ours: dict, theirs: dict) -> dict[str, float]:
    """Our figure over theirs, for every figure both have that is a measurement."""
    return {
        key: ours[key] / value
        for key, value in theirs.items()
        if key in ours and value and key not in _NOT_RATIOS and "prompt_tokens" not in key
    }


def _scaling(figures: dict) -> dict[str, float]:
    """Aggregate tok/s at 4 and 8 clients over 1 client's (empty without a 1-client figure)."""
    if not figures.get("aggregate_tps_1"):
        return {}
    return {
        f"aggregate_{n}_over_1": figures[f"aggregate_tps_{n}"] / figures["aggregate_tps_1"]
        for n in (4, 8)
    }


def round_ratios(runs: dict[str, list[dict]]) -> dict:
    """The service's ratios taken round by round (peers a few minutes apart), then their
    median and range: on a machine whose speed drifts, a ratio of medians can pair a fast
    round of one peer with a slow round of another."""
    mine = runs.get("service", [])
    figures: dict[str, dict[str, list[float]]] = {}
    for name, rows in runs.items():
        if name.startswith("service") or len(rows) != len(mine):
            continue
        for ours, theirs in zip(mine, rows, strict=True):
            for key, ratio in _ratios(ours, theirs).items():
                figures.setdefault(f"service_over_{name}", {}).setdefault(key, []).append(ratio)
    for ours in mine:
        for key, ratio in _scaling(ours).items():
            figures.setdefault("service_scaling", {}).setdefault(key, []).append(ratio)
    return {
        group: {
            key: {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }
            for key, values in by_key.items()
        }
        for group, by_key in figures.items()
    }


def report(runs: dict[str, list[dict]], threads: int, model: str, notes: list[str]) -> dict:
    """Medians per peer, and each service variant's ratio over every other peer."""
    medians = {
        name: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
        for name, rows in runs.items()
        if rows
    }
    ratios = {}
    for mine in ("service",):
        base = medians.get(mine, {})
        for name, figures in medians.items():
            if name == mine or not base or (name.startswith("service") and mine != "service"):
                continue
            ratios[f"{mine}_over_{name}"] = {
                key: round(ratio, 3) for key, ratio in _ratios(base, figures).items()
            }
    for mine in ("service",):
        scaling = _scaling(medians.get(mine, {}))
        if scaling:
            ratios[f"{mine}_scaling"] = {key: round(ratio, 3) for key, ratio in scaling.items()}
    ratios["by_round"] = round_ratios(runs)
    shares = [
        max(r["others_nice_cpu_share"], r["others_cpu_share"])
        for rows in runs.values()
        for r in rows
    ]
    loads = [r["load_average_1m"] for rows in runs.values() for r in rows]
    return {
        "model": model,
        "threads": threads,
        "cores": os.cpu_count(),
        "rounds": len(next(iter(runs.values()), [])),
        "machine_quiet": max(shares, default=0) < 0.1,
        "others_cpu_share": [min(shares, default=0), max(shares, default=0)],
        "load_average_1m": [min(loads, default=0), max(loads, default=0)],
        "medians": medians,
        "ratios": ratios,
        "notes": [
            *notes,
            "ttft ratios below 1 and tps ratios above 1 favour the service",
            "others_cpu_share: the share of all cores other work (nice 19 tenants, or processes "
            "outside this benchmark) took during a peer; machine_quiet needs it under 0.1",
        ],
    }


if __name__ == "__main__":
    main()
