"""Which catalog variant runs on this machine: catalog policy over detected hardware.

Neither the catalog (data) nor hardware detection (facts) decides this alone; keeping the
choice here lets each of them stay ignorant of the other (no catalog <-> hardware import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runtime.errors import InsufficientMemory, ModelNotFound, ProviderUnavailable

if TYPE_CHECKING:
    from runtime.catalog import Variant
    from runtime.hardware import Hardware

__all__ = ["DEVICE_RANK", "choose_variant"]

DEVICE_RANK = {"npu": 0, "gpu": 1, "cpu": 2}  # the best device first


def choose_variant(
    variants: Sequence[Variant], hardware: Hardware, device: str | None = None
) -> Variant:
    """The best variant for `hardware`: NPU, then GPU, then CPU; catalog order breaks ties.

    Raises:
        ModelNotFound: the alias has no variant for `device`.
        ProviderUnavailable: no candidate's provider is available here (names the providers
            needed and the variants that would run).
        InsufficientMemory: every runnable candidate is larger than memory allows.
    """
    alias = variants[0].alias if variants else "?"
    candidates = [v for v in variants if device is None or v.device == device]
    if not candidates:
        devices = sorted({v.device for v in variants})
        raise ModelNotFound(
            f"model {alias!r} has no {device} variant (it has: {', '.join(devices)})",
            hint=f"foundry model download {alias} --device {devices[-1] if devices else 'cpu'}",
            param="device",
        )
    runnable = [v for v in candidates if hardware.has_provider(v.provider)]
    if not runnable:
        needed = sorted({v.provider for v in candidates})
        others = [v.id for v in variants if hardware.has_provider(v.provider)]
        raise ProviderUnavailable(
            f"model {alias!r}{f' on {device}' if device else ''} needs the "
            f"{' or '.join(needed)} execution provider, which is not available here "
            f"(available: {', '.join(sorted(hardware.providers))})",
            hint=f"variants that run here: {', '.join(others)}"
            if others
            else "no variant of this model runs here",
        )
    fitting = [v for v in runnable if hardware.fits(v.size)]
    if not fitting:
        smallest = min(runnable, key=lambda v: v.size)
        raise InsufficientMemory(
            f"model {alias!r} needs about {smallest.size / 1e9:.1f} GB ({smallest.id}); "
            f"this machine has {hardware.memory_bytes / 1e9:.1f} GB of memory",
            hint="foundry model list  # pick a smaller model",
        )
    return min(fitting, key=lambda v: (DEVICE_RANK[v.device], fitting.index(v)))
