"""`foundry model …`: browse the catalog, download variants, remove them from the cache.

Catalog and cache commands work offline on `Store`; commands that change a running service
(`load`, `unload`, `ps`, `run`) go through `runtime.client`. Heavy imports (rich,
huggingface_hub, onnxruntime) happen inside command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.cli.output import ProgressRenderer, emit_json, human_size, print_table

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
    row = {
        **variant.to_json(),
        "cached": False,
        "synthetic": False,
        "runnable": hardware.has_provider(variant.provider),
    }
    if store.ref_digest(variant.id) is not None:
        model = store.resolve(variant.id)
        row |= {
            "cached": True,
            "synthetic": bool(model.metadata.get("synthetic", False)),
            "size": model.size,
            "quality": _quality(model.metadata),
        }
    return row


def _quality(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The build's teacher-forced figures (quantized chat, speech builds), if any."""
    from runtime.store.validation import Quantized, Speech, read_validation

    match read_validation(metadata.get("validation")):
        case Quantized(quality=quality) | Speech(quality=dict() as quality):
            return dict(quality)
    return None


def _quality_cell(row: dict[str, Any]) -> str:
    """`top-1 93.2 % · KLD 0.012 · ppl x1.01` (4044 corpus tokens), or "" when not measured."""
    quality = row.get("quality")
    if not quality:
        return ""
    return (
        f"top-1 {quality['top1'] * 100:.1f} % · KLD {quality['kld']:.3f} · "
        f"ppl x{quality['ppl_ratio']:.2f} ({quality['tokens']} tok)"
    )


def _uncataloged_rows(catalog: Catalog, store: Store, hardware: Hardware) -> list[dict[str, Any]]:
    """Cached models that are not catalog variants (own builds, imports), shaped like catalog rows."""
    known = {v.id for v in catalog.variants()}
    rows = []
    for model in store.list_models():
        if model.model_id in known:
            continue
        meta = model.metadata
        provider = str(meta.get("provider") or "cpu")
        rows.append(
            {
                "id": model.model_id,
                "alias": meta.get("alias") or "-",
                "task": meta.get("task", ""),
                "device": meta.get("device", "cpu"),
                "provider": provider,
                "precision": meta.get("precision"),
                "target": meta.get("target"),
                "size": model.size,
                "source": meta.get("source", ""),
                "license": meta.get("license", ""),
                "cached": True,
                "synthetic": bool(meta.get("synthetic", False)),
                "runnable": hardware.has_provider(provider),
                "quality": _quality(meta),
            }
        )
    return rows


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
        rows = [r for r in rows if r["cached"]] + [
            r
            for r in _uncataloged_rows(catalog, store, hardware)
            if (task is None or r["task"] == task) and (device is None or r["device"] == device)
        ]
    if as_json:
        emit_json({"hardware": hardware.to_json(), "models": rows})
        return
    click.echo(hardware.describe())
    if not rows:
        click.echo(
            "No model matches."
            if not cached
            else "No catalog model is cached yet: foundry model download ALIAS"
        )
        return
    print_table(
        ["alias", "device", "task", "size", "id", "cached", "license", "note"],
        [
            [
                r["alias"],
                r["device"],
                r["task"],
                human_size(r["size"]),
                r["id"],
                "yes" if r["cached"] else "",
                r["license"],
                _note(r),
            ]
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
    known = {entry.alias for entry in catalog.aliases()}
    if variant is None and alias_or_id not in known and store.ref_digest(alias_or_id):
        _cached_info(alias_or_id, catalog, store, hardware, as_json)
        return
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
        ("alias", entry.alias),
        ("name", entry.display_name),
        ("task", entry.task),
        ("family", entry.family),
        ("publisher", entry.publisher),
        ("license", f"{entry.license}  {entry.license_description}".strip()),
        ("context length", str(entry.context_length)),
        ("max output tokens", str(entry.max_output_tokens)),
        ("tool calling", "yes" if entry.supports_tool_calling else "no"),
        ("best here", best or f"none ({reason})"),
    ]
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        click.echo(f"{key:<{width}}  {value}")
    _variant_table(rows)


def _variant_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        ["id", "device", "provider", "precision", "size", "source", "cached", "quality", "note"],
        [
            [
                r["id"],
                r["device"],
                r["provider"],
                r["precision"],
                human_size(r["size"]),
                r["source"],
                "yes" if r["cached"] else "",
                _quality_cell(r),
                _note(r),
            ]
            for r in rows
        ],
    )


def _cached_info(
    model_id: str, catalog: Catalog, store: Store, hardware: Hardware, as_json: bool
) -> None:
    """`foundry model info` for an own build that the catalog does not list."""
    rows = [r for r in _uncataloged_rows(catalog, store, hardware) if r["id"] == model_id]
    if as_json:
        emit_json({"alias": None, "best_variant": model_id, "reason": "", "variants": rows})
        return
    _variant_table(rows)


# --- download / remove ------------------------------------------------------------------------
@group.command("download")
@click.argument("alias_or_id")
@click.option("--device", type=click.Choice(DEVICES), help="Download the variant for this device.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def download(alias_or_id: str, device: str | None, as_json: bool) -> None:
    """Download a model (resumable and verified); an alias picks the best variant here.

    ALIAS_OR_ID may also be a registry reference, oci://HOST/REPO[:TAG|@sha256:…].
    """
    from runtime.download import download as fetch
    from runtime.oci.reference import Reference, is_reference
    from runtime.store import Store

    with ProgressRenderer() as progress:
        if is_reference(alias_or_id):
            from runtime.oci.transfer import pull

            cached = pull(Store(), Reference.parse(alias_or_id), progress).model
        else:
            cached = fetch(alias_or_id, Store(), progress, device)
    if as_json:
        emit_json(
            {
                "id": cached.model_id,
                "path": str(cached.path),
                "size": cached.size,
                "metadata": cached.metadata,
            }
        )
    else:
        click.echo(f"{cached.model_id} is ready ({human_size(cached.size)}) at {cached.path}")


@group.command("remove")
@click.argument("alias_or_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def remove(alias_or_id: str, as_json: bool) -> None:
    """Remove a downloaded model from the cache (an alias removes every cached variant of it)."""
    from runtime.catalog import Catalog
    from runtime.errors import ModelNotFound
    from runtime.store import Store

    catalog, store = Catalog.load(), Store()
    if store.has(alias_or_id):
        ids = [alias_or_id]
    elif (variant := catalog.variant(alias_or_id)) is not None:
        ids = [variant.id]
    elif alias_or_id in {a.alias for a in catalog.aliases()}:
        ids = [v.id for v in catalog.variants(alias_or_id) if store.has(v.id)]
    else:
        ids = []
    ids = [i for i in ids if store.has(i)]
    if not ids:
        raise ModelNotFound(
            f"model {alias_or_id!r} is not in the cache", hint="foundry model list --cached"
        )
    removed = [store.remove(i) for i in ids]
    if as_json:
        emit_json({"removed": [m.model_id for m in removed]})
        return
    for model in removed:
        click.echo(
            f"removed {model.model_id}; run `foundry cache gc` to free {human_size(model.size)}"
        )


# --- commands that talk to the running service [ops] -------------------------------------
def _service_client(start: bool = False):  # type: ignore[no-untyped-def]
    """The running service's client; with `start`, start the service first if none runs."""
    from runtime.client import ServiceClient
    from runtime.errors import ServiceNotRunning

    try:
        return ServiceClient.from_state(timeout=None)
    except ServiceNotRunning:
        if not start:
            raise
    from runtime.cli.service import start_service

    click.echo("Starting the foundry service...", err=True)
    start_service()
    return ServiceClient.from_state(timeout=None)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@group.command("load")
@click.argument("model")
@click.option(
    "--ttl",
    type=click.FloatRange(0),
    default=None,
    help="Seconds the model may stay idle before it unloads (0 = never; default: the service's).",
)
def load(model: str, ttl: float | None) -> None:
    """Load MODEL (an id or alias) into the running service's memory."""
    with _service_client() as client:
        answer = client.load(model, ttl=ttl)
    model_id = answer.get("model", model) if isinstance(answer, dict) else model
    click.echo(f"loaded {model_id}" + (f" (unloads after {_duration(ttl)} idle)" if ttl else ""))


@group.command("unload")
@click.argument("model")
@click.option("--force", is_flag=True, help="Unload even if requests are using it.")
def unload(model: str, force: bool) -> None:
    """Unload MODEL from the running service's memory."""
    with _service_client() as client:
        answer = client.unload(model, force=force)
    model_id = answer.get("model", model) if isinstance(answer, dict) else model
    was_loaded = answer.get("unloaded", True) if isinstance(answer, dict) else True
    click.echo(f"unloaded {model_id}" if was_loaded else f"{model_id} was not loaded")


@group.command("ps")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ps(as_json: bool) -> None:
    """List the models resident in the running service: size, idle time, time left."""
    with _service_client() as client:
        rows = client.loaded()
    if as_json:
        emit_json({"models": rows})
        return
    if not rows:
        click.echo("No model is loaded. Load one with `foundry model load MODEL`.")
        return
    print_table(
        ["model", "task", "size", "idle", "unloads in"],
        [
            [
                r["model"],
                r.get("task") or "",
                human_size(r["size"]) if r.get("size") else "-",
                _duration(r.get("idle_seconds")),
                _duration(r.get("expires_in")),
            ]
            for r in rows
        ],
    )


@group.command("run")
@click.argument("model")
@click.option(
    "--prompt", "-p", default=None, help="Answer this one prompt, then exit (for scripts)."
)
@click.option("--system", default=None, help="A system message that starts the conversation.")
@click.option(
    "--max-tokens", type=click.IntRange(1), default=None, help="Longest reply, in tokens."
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, 2),
    default=None,
    help="Sampling temperature (0 = greedy).",
)
@click.option("--seed", type=int, default=None, help="Sampling seed (same seed, same reply).")
@click.option(
    "--ignore-eos",
    is_flag=True,
    hidden=True,
    help="Generate until --max-tokens (tests, benchmarks).",
)
@click.option(
    "--file",
    "audio_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Transcribe this audio file with a speech model (wav, flac, ogg, mp3, ...) and print the text.",
)
@click.option("--language", default=None, help="Spoken language of --file (ISO-639-1, default en).")
def run(
    model: str,
    prompt: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    ignore_eos: bool,
    audio_file: Path | None,
    language: str | None,
) -> None:
    """Chat with MODEL in the terminal, streaming tokens (starts the service if needed).

    In the chat, /exit or Ctrl-D leaves, /clear forgets the conversation and Ctrl-C stops
    the reply being written. With --file, a speech model transcribes the file instead.
    """
    from runtime.cli.chat import chat_once, ensure_loaded, repl

    options = {
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "ignore_eos": ignore_eos or None,
    }
    with _service_client(start=True) as client:
        ensure_loaded(client, model)  # download if needed, load (or fail) before the first prompt
        if audio_file is not None:
            fields = {
                "model": model,
                "response_format": "text",
                "language": language,
                "temperature": temperature,
            }
            reply = client.request(
                "POST",
                "/v1/audio/transcriptions",
                timeout=None,
                files={"file": (audio_file.name, audio_file.read_bytes())},
                data={k: str(v) for k, v in fields.items() if v is not None},
            )
            click.echo(reply.text.rstrip("\n"))
            return
        if prompt is not None:
            chat_once(client, model, prompt, options)
        else:
            repl(client, model, options)
