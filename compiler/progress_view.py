"""Render build progress events with rich on stderr: one line per stage, a bar for long stages.

Only on a terminal: when stderr is a pipe or a log file, progress stays silent so that a
failure there is exactly the one `error:` line (and its hint).

stderr keeps stdout clean for `--json` and for the result table. The console is bound to
the real stderr when the view opens, so backends redirecting Python's streams into their
log (compiler/backends/base.py) do not swallow it.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from runtime.progress import ProgressEvent

__all__ = ["ProgressView"]


class ProgressView:
    """A ProgressFn that draws stages and bars; disabled, it drops everything."""

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self._progress: Any = None
        self._bars: dict[str, Any] = {}
        self._last: tuple[str, str] | None = None

    def __enter__(self) -> ProgressView:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(file=sys.stderr)
            if not console.is_terminal:  # logs and pipes get errors and results only, not redraws
                return self
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if self._progress is None:
            return
        if event.total:
            bar = self._bars.get(event.phase)
            if bar is None:
                bar = self._bars[event.phase] = self._progress.add_task(
                    event.phase, total=event.total
                )
            self._progress.update(
                bar,
                completed=event.completed or 0,
                total=event.total,
                description=f"{event.phase}: {event.message}"[:60],
            )
            if event.done or (event.completed or 0) >= event.total:
                self._progress.remove_task(bar)
                del self._bars[event.phase]
            return
        if event.message and (event.phase, event.message) != self._last:
            self._last = (event.phase, event.message)
            mark = "[green]✓[/]" if event.done else "[cyan]•[/]"
            self._progress.console.print(f"{mark} [bold]{event.phase}[/] {event.message}")
