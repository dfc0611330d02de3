"""Engines: one class per task, registered as strings so importing this package is free.

`ENGINES[task]` is "module:Class"; `load_engine_class(task)` imports it on demand
(Olive's registry idea: one mechanism for backends and engines). Never imports
onnxruntime-genai at module level.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from runtime.errors import UnsupportedTask

if TYPE_CHECKING:
    from runtime.engines.protocol import EngineClass

__all__ = ["ENGINES", "load_engine_class"]

ENGINES: dict[str, str] = {
    "chat": "runtime.engines.chat:ChatEngine",
    "embeddings": "runtime.engines.embeddings:EmbeddingEngine",
    "speech": "runtime.engines.speech:SpeechEngine",
}


def load_engine_class(task: str) -> EngineClass:
    """Import the engine class that serves `task`.

    Raises:
        UnsupportedTask: no engine is registered for this task.
    """
    try:
        module_name, _, attr = ENGINES[task].partition(":")
    except KeyError:
        raise UnsupportedTask(
            f"no engine serves task {task!r}; known: {', '.join(ENGINES)}"
        ) from None
    engine_class: EngineClass = getattr(importlib.import_module(module_name), attr)
    return engine_class
