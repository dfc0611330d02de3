"""What this machine can run: execution providers, GPU/NPU presence, memory; and variant choice.

Providers come from onnxruntime (`get_available_providers`, the EPs compiled into the
installed wheel) and onnxruntime-genai (`is_cuda_available()` etc., the EPs its engine can
use). A GPU provider counts only when a device is also present, because a CUDA wheel lists
CUDA on a machine without a GPU. Imports onnxruntime only inside `detect()`.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Hardware", "detect"]

_ORT_SHORT = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "DmlExecutionProvider": "dml",
    "QNNExecutionProvider": "qnn",
    "WebGpuExecutionProvider": "webgpu",
}
_GPU_PROVIDERS = {"cuda", "dml", "webgpu"}
_NPU_PROVIDERS = {"qnn"}
# A model needs its weights plus KV cache and activations; keep a margin for the rest of the system.
MEMORY_FRACTION = 0.8


@dataclass(frozen=True)
class Hardware:
    """A snapshot of this machine; tests build their own to pretend to be another one."""

    providers: frozenset[str] = frozenset({"cpu"})
    memory_bytes: int = 0  # total RAM; 0 = unknown (everything fits)
    has_gpu: bool = False
    has_npu: bool = False
    ort_providers: tuple[str, ...] = field(default=("CPUExecutionProvider",))

    def has_provider(self, provider: str) -> bool:
        return provider in self.providers

    def fits(self, size: int) -> bool:
        return self.memory_bytes <= 0 or size <= self.memory_bytes * MEMORY_FRACTION

    @property
    def devices(self) -> list[str]:
        return [
            d
            for d, present in (("npu", self.has_npu), ("gpu", self.has_gpu), ("cpu", True))
            if present
        ]

    def describe(self) -> str:
        """`providers: cpu · devices: cpu · memory: 23.4 GB` for CLI headers."""
        memory = f"{self.memory_bytes / 1e9:.1f} GB" if self.memory_bytes else "unknown"
        return f"providers: {', '.join(sorted(self.providers))} · devices: {', '.join(self.devices)} · memory: {memory}"

    def to_json(self) -> dict[str, object]:
        return {
            "providers": sorted(self.providers),
            "ort_providers": list(self.ort_providers),
            "devices": self.devices,
            "has_gpu": self.has_gpu,
            "has_npu": self.has_npu,
            "memory_bytes": self.memory_bytes,
        }


@functools.cache
def detect() -> Hardware:
    """Probe this machine once per process."""
    ort_names = _ort_providers()
    short = {_ORT_SHORT[name] for name in ort_names if name in _ORT_SHORT} | {"cpu"}
    short |= _genai_providers()
    has_gpu = _gpu_present()
    has_npu = _npu_present()
    if not has_gpu:
        short -= _GPU_PROVIDERS
    if not has_npu:
        short -= _NPU_PROVIDERS
    return Hardware(frozenset(short), _memory_bytes(), has_gpu, has_npu, tuple(ort_names))


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return ["CPUExecutionProvider"]
    return list(onnxruntime.get_available_providers())


def _genai_providers() -> set[str]:
    try:
        import onnxruntime_genai as og
    except ImportError:
        return set()
    found = set()
    for provider in ("cuda", "dml", "qnn", "webgpu"):
        probe = getattr(og, f"is_{provider}_available", None)
        try:
            if probe is not None and probe():
                found.add(provider)
        except Exception:  # a probe that fails means the provider is not usable
            continue
    return found


def _gpu_present() -> bool:
    if Path("/proc/driver/nvidia/gpus").is_dir() or shutil.which("nvidia-smi"):
        return True
    return os.name == "nt"  # DirectML/WebGPU run on any Windows GPU; ORT decides the rest


def _npu_present() -> bool:
    accel = Path("/dev/accel")
    return accel.is_dir() and any(accel.iterdir())


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
