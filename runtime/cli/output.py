"""Human and machine output for every listing: rich tables, or `--json` of the same data.

rich is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import click

__all__ = ["ProgressRenderer", "emit_json", "human_size", "print_table"]


def emit_json(data: Any) -> None:
    import msgspec

    click.echo(json.dumps(msgspec.to_builtins(data), indent=2))


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num_bytes) < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"


NO_WRAP_COLUMNS = frozenset({"id", "alias", "source", "model"})
"""Columns users copy into the next command: never wrapped or truncated."""


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> None:
    """Both CLIs' one table: rich, ids never cut, and piped output gets a 240-column terminal
    (rich would otherwise wrap at 80 and break `grep`-ing a model id out of it)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, no_wrap=column in NO_WRAP_COLUMNS)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console(width=None if sys.stdout.isatty() else 240).print(table)


class ProgressRenderer:
    """Both CLIs' one ProgressFn view, on stderr (stdout stays clean for `--json` and tables).

    On a terminal: a line per stage (`• phase message`, `✓` once done) and a bar for each
    measurable one (bytes as sizes). Piped or logged: with `lines` (downloads, uploads, imports)
    a line every 10 % of a measured stage and `phase: message` for the others; without it
    (builds) nothing, so a failure there is exactly the one `error:` line. The console binds
    to the real stderr on enter, so backends that redirect Python's streams into their log
    (compiler/backends/base.py) do not swallow it. `enabled=False` drops everything.
    """

    VERBS: ClassVar[dict[str, str]] = {"download": "downloading", "upload": "uploading"}

    def __init__(self, *, enabled: bool = True, lines: bool = True) -> None:
        self.enabled, self.lines = enabled, lines
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._last_decile: dict[str, int] = {}
        self._last_line: tuple[str, str] | None = None

    def __enter__(self) -> ProgressRenderer:
        import sys

        from rich.console import Console

        console = Console(file=sys.stderr)
        if self.enabled and console.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[amount]}"),
                console=console,
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, event: Any) -> None:
        if not self.enabled or not (self._bar is not None or self.lines):
            return
        if event.total:
            self._measured(event)
        elif event.message and (event.phase, event.message) != self._last_line:
            self._last_line = (event.phase, event.message)
            if self._bar is not None:
                mark = "[green]✓[/]" if event.done else "[cyan]•[/]"
                self._bar.console.print(f"{mark} [bold]{event.phase}[/] {event.message}")
            elif event.phase != "register":
                click.echo(f"{event.phase}: {event.message}", err=True)

    def _measured(self, event: Any) -> None:
        verb = self.VERBS.get(event.phase, event.phase)
        key = f"{event.phase} {event.message.split(': ')[0]}"
        done = event.done or (event.completed or 0) >= event.total
        amount = _amount(event)
        if self._bar is not None:
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = self._bar.add_task(verb, total=event.total, amount="")
            description = f"{verb} {event.message}"[:60]
            completed = event.completed or 0
            self._bar.update(
                task, completed=completed, total=event.total, description=description, amount=amount
            )
            if done:
                self._bar.remove_task(task)
                del self._tasks[key]
                self._bar.console.print(f"[green]✓[/] [bold]{verb}[/] {event.message} ({amount})")
            return
        decile = int(10 * (event.completed or 0) / event.total)
        if decile > self._last_decile.get(key, -1) or event.done:
            self._last_decile[key] = decile
            click.echo(f"{verb} {event.message} {10 * decile}% ({amount})", err=True)


def _amount(event: Any) -> str:
    """`1.5 MB / 90.0 MB` for bytes, `3 / 24 tensors` for anything else."""
    if event.unit == "B":
        return f"{human_size(event.completed or 0)} / {human_size(event.total)}"
    return f"{event.completed or 0:g} / {event.total:g} {event.unit}".rstrip()
