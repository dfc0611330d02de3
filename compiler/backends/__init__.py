"""Backends by name: strings to import, so naming one never loads Olive or torch.

`load_backend(name)` imports the module on first use; a missing `[compiler]` extra becomes
`NotInstalled` with the command that installs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from runtime.errors import NotInstalled, RecipeError

if TYPE_CHECKING:
    from compiler.backends.base import Backend

__all__ = ["BACKENDS", "load_backend"]

BACKENDS: dict[str, str] = {
    "olive": "compiler.backends.olive:OliveBackend",
    "genai-builder": "compiler.backends.genai_builder:GenaiBuilderBackend",
    "olive-encoder": "compiler.backends.olive_encoder:OliveEncoderBackend",
    "whisper": "compiler.backends.whisper:WhisperBackend",
}


def load_backend(name: str) -> Backend:
    """An instance of the backend registered under `name`.

    Raises:
        RecipeError: no backend of that name.
        NotInstalled: its heavy dependencies are missing.
    """
    if name not in BACKENDS:
        raise RecipeError(f"unknown backend {name!r}; backends: {', '.join(sorted(BACKENDS))}")
    module_name, attr = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotInstalled(
            f"backend {name!r} needs the compiler extra ({exc.name or exc} is missing)",
            hint="pip install 'foundry-build[compiler]'",
        ) from exc
    return getattr(module, attr)()
