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


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console().print(table)


class ProgressRenderer:
    """Renders transfer ProgressEvents (download, upload) on stderr: a rich bar on a terminal, plain lines (every 10 %) otherwise."""

    VERBS: ClassVar[dict[str, str]] = {"download": "downloading", "upload": "uploading"}

    def __init__(self) -> None:
        import sys

        self.interactive = sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last_decile: dict[str, int] = {}

    def __enter__(self) -> ProgressRenderer:
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, event: Any) -> None:
        verb = self.VERBS.get(event.phase)
        if verb is None or event.total is None:
            if event.message and event.phase != "register":
                click.echo(f"{event.phase}: {event.message}", err=True)
            return
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(verb, total=event.total)
            self._bar.update(
                self._task,
                completed=event.completed or 0,
                total=event.total,
                description=f"{verb} {event.message.split(': ')[-1]}",
            )
            return
        decile = int(10 * (event.completed or 0) / event.total) if event.total else 10
        key = event.message.split(": ")[0]
        if decile > self._last_decile.get(key, -1) or event.done:
            self._last_decile[key] = decile
            click.echo(
                f"{verb} {event.message} {10 * decile}% "
                f"({human_size(event.completed or 0)} / {human_size(event.total)})",
                err=True,
            )
