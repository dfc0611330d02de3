"""How many intra-op threads every onnxruntime session gets, chosen per machine at load time.

onnxruntime-genai leaves `intra_op_num_threads` to onnxruntime when genai_config.json does not
set it, and onnxruntime picked one thread on this 2-core VM (issue 13): decode 22.7 -> 32.2
tok/s and a 907-token prefill 9.94 -> 5.48 s with 2 (Qwen2.5-Coder-0.5B int4, og directly).
So every engine asks `session_threads()` once at load: `FOUNDRY_THREADS` when set, else the
physical cores this process may run on. SMT siblings share one core's vector units, and a
memory-bound int4 decode gains nothing from them; machines where all logical cores measure
faster set FOUNDRY_THREADS. Sessions made with onnxruntime itself (embeddings, the chat batch)
also stop busy-waiting when the machine is already busy at load (`ort_session_options`);
onnxruntime-genai's genai_config has no such setting. Store snapshots are content-addressed and
never written: the choice reaches onnxruntime-genai as an in-memory `og.Config.overlay`.
Imports onnxruntime only inside `ort_session_options`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec

from runtime.settings import env_number

__all__ = [
    "THREADS_ENV",
    "SessionThreads",
    "genai_overlay",
    "ort_session_options",
    "physical_cores",
    "resolve_threads",
    "session_threads",
]

THREADS_ENV = "FOUNDRY_THREADS"


class SessionThreads(msgspec.Struct, frozen=True, kw_only=True):
    """The intra-op thread count and why it was chosen (shown by `foundry service status`)."""

    intra_op: int
    source: str  # "FOUNDRY_THREADS" | "physical cores" | "argument"
    spinning: bool = True  # onnxruntime's idle threads busy-wait (only sessions we create)


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
    cores = physical_cores()
    spinning = os.getloadavg()[0] < cores
    wanted = env_number(THREADS_ENV, int)
    if wanted is not None and int(wanted) >= 1:
        return SessionThreads(intra_op=int(wanted), source=THREADS_ENV, spinning=spinning)
    return SessionThreads(intra_op=cores, source="physical cores", spinning=spinning)


def ort_session_options(threads: SessionThreads) -> Any:
    """onnxruntime SessionOptions with these threads; no busy-waiting on a busy machine.

    Spinning threads on cores other processes need starve both: with the load average at
    10-15 on 2 cores, a 0.5B int4 decode ran 15.7 / 11.5 tok/s with spinning off vs 4.2 / 5.1
    with it on (4 rows: 25.7 / 48.1 vs 7.8 / 17.9). On an idle machine spinning saves the
    wake-up of every parallel section, so it stays on when the load is below the cores.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.intra_op
    options.log_severity_level = 3
    if not threads.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def resolve_threads(threads: int | None) -> SessionThreads:
    """An engine's `threads=` argument if given, else this machine's `session_threads()`."""
    chosen = session_threads()
    if threads:
        return SessionThreads(intra_op=threads, source="argument", spinning=chosen.spinning)
    return chosen


def genai_overlay(threads: SessionThreads, sections: tuple[str, ...] = ("decoder",)) -> str:
    """JSON for `og.Config.overlay`: the thread count in each model section's session_options.

    Whisper has "encoder" and "decoder"; a decoder-only chat model has "decoder".
    """
    options = {"session_options": {"intra_op_num_threads": threads.intra_op}}
    return json.dumps({"model": dict.fromkeys(sections, options)})
