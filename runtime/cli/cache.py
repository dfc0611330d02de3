"""`foundry cache …`: inspect and maintain the content-addressed store, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from runtime.cli.output import emit_json, human_size, print_table
from runtime.names import check_model_id

__all__ = ["group"]


def _store():  # type: ignore[no-untyped-def]
    from runtime.store import Store

    return Store()


@click.group("cache")
def group() -> None:
    """Inspect and maintain the model cache ($FOUNDRY_HOME/cache)."""


@group.command("location")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def location(as_json: bool) -> None:
    """Print where the cache lives."""
    from runtime.settings import cache_dir

    if as_json:
        emit_json({"location": str(cache_dir())})
    else:
        click.echo(str(cache_dir()))


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_cached(as_json: bool) -> None:
    """List the model ids in the cache, with their size, task and target."""
    models = _store().list_models()
    rows = [
        {
            "id": m.model_id,
            "task": m.metadata.get("task", ""),
            "target": m.metadata.get("target", ""),
            "synthetic": bool(m.metadata.get("synthetic", False)),
            "size": m.size,
            "path": str(m.path),
            "digest": m.manifest_digest,
        }
        for m in models
    ]
    if as_json:
        emit_json({"models": rows})
        return
    if not rows:
        click.echo(
            "The cache is empty. Build a model with `foundry-build MODEL` or `foundry model download ALIAS`."
        )
        return
    print_table(
        ["id", "task", "target", "size", "note"],
        [
            [
                r["id"],
                r["task"],
                r["target"],
                human_size(r["size"]),
                "random weights" if r["synthetic"] else "",
            ]
            for r in rows
        ],
    )


@group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def verify(as_json: bool) -> None:
    """Re-hash every blob and name any damaged model (exit 6 if damage is found)."""
    problems = _store().verify()
    if as_json:
        emit_json({"ok": not problems, "problems": problems})
    elif problems:
        for line in problems:
            click.echo(f"damaged: {line}")
    else:
        click.echo("cache verified: every blob matches its digest")
    if problems:
        raise SystemExit(6)


@group.command("gc")
@click.option("--dry-run", is_flag=True, help="Show what would be freed without deleting.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def gc(dry_run: bool, as_json: bool) -> None:
    """Free blobs, manifests and snapshots that no model id reaches."""
    plan = _store().gc(dry_run=dry_run, progress=lambda event: click.echo(event.message, err=True))
    if as_json:
        emit_json({"dry_run": dry_run, **plan})
        return
    verb = "would free" if dry_run else "freed"
    click.echo(
        f"{verb} {human_size(plan['bytes'])} ({plan['blobs']} blobs, {plan['manifests']} manifests)"
    )


@group.command("remove")
@click.argument("model_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def remove(model_id: str, as_json: bool) -> None:
    """Remove MODEL_ID from the cache (run `foundry cache gc` to free its space)."""
    cached = _store().remove(model_id)
    if as_json:
        emit_json({"removed": cached.model_id})
    else:
        click.echo(
            f"removed {cached.model_id}; run `foundry cache gc` to free {human_size(cached.size)}"
        )


@group.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--name", help="Catalog alias or model id to register it under (default: the folder's name)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def import_(folder: Path, name: str | None, as_json: bool) -> None:
    """Register an existing ONNX folder (e.g. an Olive output) after it loads and generates here.

    FOLDER may also be a bundle FILE.tar written by `foundry cache export` (an OCI image layout).
    """
    from runtime.artifact import import_folder

    if folder.is_file():
        _import_bundle(folder, as_json)
        return

    cached = import_folder(folder, _store(), name=name)
    if as_json:
        emit_json(
            {
                "id": cached.model_id,
                "path": str(cached.path),
                "size": cached.size,
                "metadata": cached.metadata,
            }
        )
        return
    meta = cached.metadata
    click.echo(
        f"imported {cached.model_id} ({meta.get('task')}, {meta.get('family')}, {human_size(cached.size)})"
    )
    if not meta.get("runnable", True):
        click.echo(f"note: not validated: {meta['validation']['skipped']}")


# --- a registry as the shared cache (runtime/oci/) ---------------------------------------------
@group.command("push")
@click.argument("model_id")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def push(model_id: str, reference: str, as_json: bool) -> None:
    """Publish MODEL_ID to an OCI registry: oci://HOST/REPO[:TAG] (blobs it has are not sent)."""
    from runtime.cli.output import ProgressRenderer
    from runtime.oci.reference import Reference
    from runtime.oci.transfer import push as push_model

    ref = Reference.parse(reference)
    with ProgressRenderer() as progress:
        result = push_model(_store(), model_id, ref, progress)
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"pushed {model_id} to {result.reference} ({result.digest[:19]}…): "
        f"{result.uploaded_blobs} blobs uploaded, {result.mounted_blobs} mounted from another "
        f"repository, {result.present_blobs} already there, "
        f"{human_size(result.sent_bytes)} sent"
    )


@group.command("pull")
@click.argument("reference")
@click.option("--as", "model_id", default=None, help="Model id to register it under.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def pull(reference: str, model_id: str | None, as_json: bool) -> None:
    """Fetch a model from oci://HOST/REPO[:TAG|@sha256:…]; verified, validated, resumable."""
    from runtime.cli.output import ProgressRenderer
    from runtime.oci.reference import Reference
    from runtime.oci.transfer import pull as pull_model

    ref = Reference.parse(reference)
    if model_id is not None:
        check_model_id(model_id)
    with ProgressRenderer() as progress:
        result = pull_model(_store(), ref, progress, model_id=model_id)
    _print_pull(result, as_json)


def _print_pull(result: Any, as_json: bool) -> None:
    cached = result.model
    if as_json:
        emit_json(
            {
                "id": cached.model_id,
                "path": str(cached.path),
                "size": cached.size,
                "manifest_digest": cached.manifest_digest,
                **{k: v for k, v in vars(result).items() if k != "model"},
            }
        )
        return
    click.echo(
        f"pulled {cached.model_id} ({human_size(cached.size)}) from {result.reference}: "
        f"{result.fetched_blobs} blobs fetched, {result.cached_blobs} already cached"
        + (f", {human_size(result.resumed_bytes)} resumed" if result.resumed_bytes else "")
    )
    if "skipped" in result.validation:
        click.echo(f"note: not validated: {result.validation['skipped']}")


# --- bundles for air-gapped machines (runtime/oci/bundle.py) -----------------------------------
@group.command("export")
@click.argument("model_ids", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The bundle to write (an OCI image layout in a tar file).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def export(model_ids: tuple[str, ...], output: Path, as_json: bool) -> None:
    """Write MODEL_IDS to one tar file (OCI image layout) for `foundry cache import` elsewhere."""
    from runtime.cli.output import ProgressRenderer
    from runtime.oci.bundle import export_bundle

    with ProgressRenderer() as progress:
        result = export_bundle(_store(), list(dict.fromkeys(model_ids)), output, progress)
    if as_json:
        emit_json(result)
    else:
        click.echo(
            f"exported {', '.join(result['models'])} to {output} "
            f"({result['blobs']} blobs, {human_size(result['bytes'])})"
        )


def _import_bundle(bundle: Path, as_json: bool) -> None:
    from runtime.oci.bundle import import_bundle

    result = import_bundle(_store(), bundle)
    if as_json:
        emit_json(
            {
                "models": [
                    {"id": m.model_id, "path": str(m.path), "manifest_digest": m.manifest_digest}
                    for m in result.models
                ],
                "written_blobs": result.written_blobs,
                "skipped_blobs": result.skipped_blobs,
                "validation": result.validation,
            }
        )
        return
    for model in result.models:
        click.echo(f"imported {model.model_id} ({human_size(model.size)}) from {bundle.name}")
    click.echo(f"{result.written_blobs} blobs written, {result.skipped_blobs} already cached")
