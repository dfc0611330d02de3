"""Progress events: long operations report through a callback and never print.

The CLI renders events with rich, the service streams them as lines; core modules
only call `progress(ProgressEvent(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressEvent", "ProgressFn", "silent"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation.

    `phase` names the stage ("download", "convert", "validate", "register", ...);
    `completed`/`total` are in `unit` (bytes, files, tensors) when the stage is measurable.
    """

    phase: str
    message: str = ""
    completed: float | None = None
    total: float | None = None
    unit: str = ""
    done: bool = False


ProgressFn = Callable[[ProgressEvent], None]


def silent(event: ProgressEvent) -> None:
    """A ProgressFn that drops every event (tests, library callers that do not care)."""
