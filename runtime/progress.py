"""Progress events: long operations report through a callback and never print.

The CLI renders events with rich, the service streams them as lines; core modules
only call `progress(ProgressEvent(...))`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["ProgressEvent", "ProgressFn", "ThreadedProgress", "silent"]

T = TypeVar("T")


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


class ThreadedProgress(Generic[T]):
    """Run a blocking `work(progress)` on a worker thread; iterate its events on the event loop.

    The service streams downloads this way: `async for event in task: ...`, then
    `await task.result()` returns the work's value or raises its exception.
    """

    def __init__(self, work: Callable[[ProgressFn], T]):
        self._work = work
        self._future: asyncio.Future[T] | None = None

    async def __aiter__(self) -> AsyncIterator[ProgressEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

        def progress(event: ProgressEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def run() -> T:
            try:
                return self._work(progress)
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        self._future = loop.run_in_executor(None, run)
        while (event := await events.get()) is not None:
            yield event

    async def result(self) -> T:
        """The work's return value (iterate the events first)."""
        assert self._future is not None, "iterate the events before asking for the result"
        return await self._future
