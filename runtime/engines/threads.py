"""How many intra-op threads every onnxruntime session gets, chosen per machine at load time.

onnxruntime-genai leaves `intra_op_num_threads` to onnxruntime when genai_config.json does not
set it, and onnxruntime picked one thread on this 2-core VM (issue 13): decode 22.7 -> 32.2
tok/s and a 907-token prefill 9.94 -> 5.48 s with 2 (Qwen2.5-Coder-0.5B int4, og directly).
So every engine asks `session_threads()` once at load: `FOUNDRY_THREADS` when set, else the
physical cores this process may run on. SMT siblings share one core's vector units, and a
memory-bound int4 decode gains nothing from them; machines where all logical cores measure
faster set FOUNDRY_THREADS. Sessions made with onnxruntime itself (embeddings, the chat batch)
also stop busy-waiting when other processes already keep the cores busy at load
(`spinning_wanted`; FOUNDRY_SPIN=on|off overrides). onnxruntime-genai 0.18's sessions (Whisper,
the og.Generator fallback) keep its default: its genai_config refuses `config_entries`
("Unknown value"), so there is no way to say it. Store snapshots are content-addressed and never written: the choice reaches
onnxruntime-genai as an in-memory `og.Config.overlay`.
Imports onnxruntime only inside `ort_session_options`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import msgspec

from runtime.settings import env_number

__all__ = [
    "SPIN_ENV",
    "THREADS_ENV",
    "SessionThreads",
    "genai_overlay",
    "ort_session_options",
    "others_cpu_share",
    "physical_cores",
    "resolve_threads",
    "session_threads",
    "spinning_wanted",
]

THREADS_ENV = "FOUNDRY_THREADS"
SPIN_ENV = "FOUNDRY_SPIN"
# Spin when other processes keep less than this share of all cores busy (sampled at load).
OTHERS_SHARE_TO_SPIN = 0.25
SPIN_SAMPLE_S = 0.2
_NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


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


def session_threads(*, spin_control: bool = True) -> SessionThreads:
    """`FOUNDRY_THREADS` if set (>= 1), else the physical cores; spinning per `spinning_wanted`.

    `spin_control=False` is for sessions whose spinning cannot be set (onnxruntime-genai's) and
    for readers that want only the count: no CPU sample, and spinning True, og's default.

    Raises:
        InvalidRequest: FOUNDRY_THREADS is not a number, or FOUNDRY_SPIN not on/off.
    """
    cores = physical_cores()
    spinning = spinning_wanted() if spin_control else True
    wanted = env_number(THREADS_ENV, int)
    if wanted is not None and int(wanted) >= 1:
        return SessionThreads(intra_op=int(wanted), source=THREADS_ENV, spinning=spinning)
    return SessionThreads(intra_op=cores, source="physical cores", spinning=spinning)


def spinning_wanted() -> bool:
    """Whether onnxruntime's idle threads may busy-wait: FOUNDRY_SPIN, else a CPU sample.

    Spinning threads on cores other processes need starve both: with the load average at
    10-15 on 2 cores, a 0.5B int4 decode ran 15.7 / 11.5 tok/s with spinning off vs 4.2 / 5.1
    with it on (4 rows: 25.7 / 48.1 vs 7.8 / 17.9). On an idle machine spinning saves the
    wake-up of every parallel section. The load average was the earlier rule, but it counts
    this process's own recent work and lags a minute: a service started right after a build
    or another benchmark lost spinning on an idle machine. So the busy share of the cores is
    sampled over SPIN_SAMPLE_S, minus this process's own CPU time.
    """
    forced = _forced_spin()
    if forced is not None:
        return forced
    return others_cpu_share() < OTHERS_SHARE_TO_SPIN


def _forced_spin() -> bool | None:
    from runtime.errors import InvalidRequest
    from runtime.settings import env

    value = (env(SPIN_ENV) or "").strip().lower()
    if not value:
        return None
    if value not in {"on", "off"}:
        raise InvalidRequest(f"{SPIN_ENV}={value!r} is not on or off", hint=f"unset {SPIN_ENV}")
    return value == "on"


def others_cpu_share(window: float = SPIN_SAMPLE_S) -> float:
    """The share of all cores that other processes kept busy over `window` seconds (0..1).

    /proc/stat's busy jiffies minus this process's (all threads, /proc/self/stat); 0.0 where
    /proc is missing (no sample, no reason to stop spinning). Niced work counts too: a
    nice-19 task still gets time slices of a few ms beside ours, and a parallel section waits
    for its slowest thread (service decode 36.8 tok/s spinning while niced tests took half the
    cores, real SmolLM2-135M int4; og alone beside a tenth: 95.7).
    """
    try:
        busy0, total0, own0 = _busy_jiffies()
        time.sleep(window)
        busy1, total1, own1 = _busy_jiffies()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = total1 - total0
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / total if total > 0 else 0.0


def _busy_jiffies() -> tuple[int, int, int]:
    """(busy, total) jiffies of all CPUs and this process's user + system jiffies."""
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    busy = sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return busy, sum(cpu), int(own[11]) + int(own[12])  # utime, stime


def ort_session_options(threads: SessionThreads) -> Any:
    """onnxruntime SessionOptions with these threads; no busy-waiting when told not to."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.intra_op
    options.log_severity_level = 3
    if not threads.spinning:
        for key, value in _NO_SPINNING.items():
            options.add_session_config_entry(key, value)
    return options


def resolve_threads(threads: int | None, *, spin_control: bool = True) -> SessionThreads:
    """An engine's `threads=` argument if given, else this machine's `session_threads()`."""
    chosen = session_threads(spin_control=spin_control)
    if threads:
        return SessionThreads(intra_op=threads, source="argument", spinning=chosen.spinning)
    return chosen


def genai_overlay(threads: SessionThreads, sections: tuple[str, ...] = ("decoder",)) -> str:
    """JSON for `og.Config.overlay`: the thread count in each model section's session_options.

    Whisper has "encoder" and "decoder"; a decoder-only chat model has "decoder". Spinning
    cannot be said here (the module docstring).
    """
    options = {"session_options": {"intra_op_num_threads": threads.intra_op}}
    return json.dumps({"model": dict.fromkeys(sections, options)})
