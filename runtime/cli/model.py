"""`foundry model …`: browse the catalog, download variants, remove them from the cache.

Catalog and cache commands work offline on `Store`; commands that change a running service
(`load`, `unload`, `ps`, `run`) go through `runtime.client`. Heavy imports (rich,
huggingface_hub, onnxruntime) happen inside command bodies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from runtime.cli.output import emit_json, human_size

if TYPE_CHECKING:
    from runtime.catalog import Catalog, Variant
    from runtime.hardware import Hardware
    from runtime.store import Store

__all__ = ["group"]

TASKS = ("chat", "embeddings", "speech")
DEVICES = ("cpu", "gpu", "npu")


@click.group("model")
def group() -> None:
    """Find, download and manage catalog models (aliases resolve to the best variant here)."""


# --- helpers ----------------------------------------------------------------------------
def _context() -> tuple[Catalog, Store, Hardware]:
    from runtime.catalog import Catalog
    from runtime.hardware import detect
    from runtime.store import Store

    return Catalog.load(), Store(), detect()


def _row(variant: Variant, store: Store, hardware: Hardware) -> dict[str, Any]:
    """One listing row: the variant plus what this machine and cache say about it."""
    cached = store.ref_digest(variant.id) is not None
    synthetic = cached and bool(store.resolve(variant.id).metadata.get("synthetic", False))
    return {
        **variant.to_json(),
        "cached": cached,
        "synthetic": synthetic,
        "runnable": hardware.has_provider(variant.provider),
    }


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table that never truncates ids: piped output gets a wide virtual terminal."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("id", "alias", "source"))
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _note(row: dict[str, Any]) -> str:
    notes = []
    if row["synthetic"]:
        notes.append("synthetic (random weights)")
    if not row["runnable"]:
        notes.append(f"needs {row['provider']}")
    return ", ".join(notes)


# --- list / info ------------------------------------------------------------------------
@group.command("list")
@click.option("--task", type=click.Choice(TASKS), help="Only models for this task.")
@click.option("--device", type=click.Choice(DEVICES), help="Only variants for this device.")
@click.option("--cached", is_flag=True, help="Only variants already in the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_models(task: str | None, device: str | None, cached: bool, as_json: bool) -> None:
    """List catalog models and their variants, with what runs on this machine."""
    catalog, store, hardware = _context()
    rows = [
        _row(v, store, hardware)
        for v in sorted(catalog.variants(), key=lambda v: (v.alias, v.id))
        if (task is None or v.task == task) and (device is None or v.device == device)
    ]
    if cached:
        rows = [r for r in rows if r["cached"]]
    if as_json:
        emit_json({"hardware": hardware.to_json(), "models": rows})
        return
    click.echo(hardware.describe())
    if not rows:
        click.echo("No model matches." if not cached else "No catalog model is cached yet: foundry model download ALIAS")
        return
    print_table(
        ["alias", "device", "task", "size", "id", "cached", "license", "note"],
        [
            [r["alias"], r["device"], r["task"], human_size(r["size"]), r["id"],
             "yes" if r["cached"] else "", r["license"], _note(r)]
            for r in rows
        ],
    )


@group.command("info")
@click.argument("alias_or_id")
@click.option("--device", type=click.Choice(DEVICES), help="Resolve the alias for this device.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def info(alias_or_id: str, device: str | None, as_json: bool) -> None:
    """Show a model: its alias facts, every variant, and which one runs here."""
    from runtime.errors import FoundryError

    catalog, store, hardware = _context()
    variant = catalog.variant(alias_or_id)
    entry = variant.entry if variant is not None else catalog.alias(alias_or_id)
    variants = [variant] if variant is not None else catalog.variants(entry.alias)
    try:
        best: str | None = catalog.best_variant(entry.alias, device, hardware).id
        reason = ""
    except FoundryError as exc:
        best, reason = None, exc.message
    rows = [_row(v, store, hardware) for v in variants]
    if as_json:
        emit_json({"alias": entry.alias, "best_variant": best, "reason": reason, "variants": rows})
        return
    facts = [
        ("alias", entry.alias), ("name", entry.display_name), ("task", entry.task),
        ("family", entry.family), ("publisher", entry.publisher),
        ("license", f"{entry.license}  {entry.license_description}".strip()),
        ("context length", str(entry.context_length)), ("max output tokens", str(entry.max_output_tokens)),
        ("tool calling", "yes" if entry.supports_tool_calling else "no"),
        ("best here", best or f"none ({reason})"),
    ]
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        click.echo(f"{key:<{width}}  {value}")
    print_table(
        ["id", "device", "provider", "precision", "size", "source", "cached", "note"],
        [
            [r["id"], r["device"], r["provider"], r["precision"], human_size(r["size"]), r["source"],
             "yes" if r["cached"] else "", _note(r)]
            for r in rows
        ],
    )
