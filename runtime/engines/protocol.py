"""The seam between the service and the engines: what the manager and the APIs may call.

The service layer (runtime/service, runtime/manager.py) sees an engine only through these
Protocols; how an engine schedules, batches or caches is its own business (engines/chat.py,
batch.py). The chat engine's internals may be rebuilt freely as long as this surface holds,
and the service may be rebuilt freely as long as it calls nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from runtime.engines.base import Chunk, GenerationParams, GenerationRecord, JsonObject

if TYPE_CHECKING:
    import numpy as np

    from runtime.engines.embeddings import Embeddings
    from runtime.engines.speech import Transcript
    from runtime.engines.threads import SessionThreads
    from runtime.store.metadata import ModelMetadata

__all__ = [
    "ChatEngineProtocol",
    "EmbeddingEngineProtocol",
    "Engine",
    "EngineClass",
    "SpeechEngineProtocol",
]


class TokenStream(Protocol):
    """One submitted sequence: `async for chunk in stream`; `aclose()` cancels it."""

    def __aiter__(self) -> AsyncIterator[Chunk]: ...
    async def __anext__(self) -> Chunk: ...
    async def aclose(self) -> None: ...


class EngineClass(Protocol):
    """How the manager builds every engine, whatever its task (runtime.engines.ENGINES)."""

    def __call__(self, path: Path, metadata: ModelMetadata, *, model_id: str) -> Engine: ...


@runtime_checkable
class Engine(Protocol):
    """What every loaded engine offers the manager."""

    task: str
    model_id: str
    path: Path
    metadata: ModelMetadata  # the manifest's (tool_parser, family, thinks, ...)
    threads: SessionThreads  # chosen at load (threads.py); `foundry service status` shows it

    def active_requests(self) -> int: ...
    def close(self) -> None: ...


@runtime_checkable
class ChatEngineProtocol(Engine, Protocol):
    """A chat artifact: template, tokenizer and generation.

    `stream()` is called on the event loop and raises (ContextTooLong, QueueFull,
    KvBudgetFull, InvalidRequest) before any byte is sent; chunks come from the engine's own
    threads. Greedy output is the same token for token whatever else runs beside it.
    `metadata.thinks` is never None (a manifest older than it: read from the template at load).
    """

    context_length: int
    vocab_size: int  # 0 when genai_config does not say
    queue_size: int
    on_finish: Callable[[GenerationRecord], None] | None  # set by the manager

    def render_prompt(
        self,
        messages: list[JsonObject],
        tools: list[JsonObject] | None = None,
        add_generation_prompt: bool = True,
    ) -> str: ...
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def stream(self, prompt_tokens: list[int], params: GenerationParams) -> TokenStream: ...
    def waiting_requests(self) -> int: ...


@runtime_checkable
class EmbeddingEngineProtocol(Engine, Protocol):
    """An embedding artifact: batched off the event loop, one row per input."""

    async def aembed(self, inputs: list[str] | list[list[int]]) -> Embeddings: ...
    def truncate_dimensions(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray: ...


@runtime_checkable
class SpeechEngineProtocol(Engine, Protocol):
    """A Whisper artifact: `check_language` raises InvalidRequest before any work is done."""

    def check_language(self, language: str | None) -> str: ...
    async def atranscribe(
        self,
        pcm: np.ndarray,
        *,
        language: str | None = None,
        task: str = "transcribe",
        prompt: str | None = None,
        temperature: float = 0.0,
    ) -> Transcript: ...
