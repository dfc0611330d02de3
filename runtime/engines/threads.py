"""How many intra-op threads every onnxruntime session gets, chosen per machine at load time.

onnxruntime-genai leaves `intra_op_num_threads` to onnxruntime when genai_config.json does not
set it, and onnxruntime picked one thread on this 2-core VM (issue 13): decode 22.7 -> 32.2
tok/s and a 907-token prefill 9.94 -> 5.48 s with 2 (Qwen2.5-Coder-0.5B int4, og directly).
So every engine asks `session_threads()` once at load: `FOUNDRY_THREADS` when set, else the
physical cores this process may run on. SMT siblings share one core's vector units, and a
memory-bound int4 decode gains nothing from them; machines where all logical cores measure
faster set FOUNDRY_THREADS. Store snapshots are content-addressed and never written: the
choice reaches onnxruntime-genai as an in-memory `og.Config.overlay`. Never imports onnxruntime.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec

from runtime.settings import env_number

__all__ = [
    "THREADS_ENV",
    "SessionThreads",
    "genai_overlay",
    "physical_cores",
    "resolve_threads",
    "session_threads",
]

THREADS_ENV = "FOUNDRY_THREADS"


class SessionThreads(msgspec.Struct, frozen=True, kw_only=True):
    """The intra-op thread count and why it was chosen (shown by `foundry service status`)."""

    intra_op: int
    source: str  # "FOUNDRY_THREADS" | "physical cores"


def physical_cores(cpuinfo: Path = Path("/proc/cpuinfo")) -> int:
    """Distinct (package, core) pairs among the CPUs this process may use; logical count if unknown."""
    allowed = _allowed_cpus()
    try:
        blocks = cpuinfo.read_text().split("\n\n")
    except OSError:
        return len(allowed)
    cores: set[tuple[str, str]] = set()
    for block in blocks:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        if "processor" not in fields or int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return len(cores) or len(allowed)


def _allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def session_threads() -> SessionThreads:
    """`FOUNDRY_THREADS` if set (>= 1), else the physical cores.

    Raises:
        InvalidRequest: FOUNDRY_THREADS is not a number.
    """
    wanted = env_number(THREADS_ENV, int)
    if wanted is not None and int(wanted) >= 1:
        return SessionThreads(intra_op=int(wanted), source=THREADS_ENV)
    return SessionThreads(intra_op=physical_cores(), source="physical cores")


def resolve_threads(threads: int | None) -> SessionThreads:
    """An engine's `threads=` argument if given, else this machine's `session_threads()`."""
    if threads:
        return SessionThreads(intra_op=threads, source="argument")
    return session_threads()


def genai_overlay(threads: SessionThreads, sections: tuple[str, ...] = ("decoder",)) -> str:
    """JSON for `og.Config.overlay`: the thread count in each model section's session_options.

    Whisper has "encoder" and "decoder"; a decoder-only chat model has "decoder".
    """
    options = {"session_options": {"intra_op_num_threads": threads.intra_op}}
    return json.dumps({"model": dict.fromkeys(sections, options)})
