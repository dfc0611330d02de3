"""The build pipeline as one readable function.

source -> recipe -> build key -> backend -> validate -> pack -> register.

Everything a build writes goes into a staging folder under the store's `tmp/`; only a
validated, packed folder is registered (blobs -> manifest -> build key -> ref), so a
failure or a kill leaves the store as it was. A lock per build key makes two concurrent
builds of the same inputs do the work once: the second waits, then finds a cache hit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.backends import BACKENDS, load_backend
from compiler.backends.base import captured_output, log_tail
from compiler.build_key import build_key, short
from compiler.nbits import key_facts
from compiler.pack import context_length, pack, tool_versions
from compiler.recipe import RecipeFile, Target, load_recipes, pick
from compiler.source import Source, dequantized, resolve_source, synthetic
from compiler.validate import is_runnable, validate
from runtime.artifact import artifact_thinks
from runtime.errors import BuildError, DiskFull, FoundryError, InvalidRequest
from runtime.kill_points import kill_point
from runtime.names import check_model_id
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.store import CachedModel, Store
from runtime.store.metadata import ModelMetadata

__all__ = ["BuildPlan", "BuildRequest", "BuildResult", "build", "default_model_id", "plan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildRequest:
    model: str
    targets: list[str] = field(default_factory=lambda: ["cpu-int4"])
    model_id: str | None = None
    synthetic: bool = False
    layers: int | None = None
    hidden: int | None = None
    task: str | None = None
    backend: str | None = None  # override the recipe's backend (e.g. "genai-builder")
    gguf_file: str | None = None  # one GGUF file of a hub repo (or folder) to build from


@dataclass(frozen=True)
class BuildResult:
    model: CachedModel
    target: str
    cache_hit: bool
    validation: dict[str, Any]
    build_key: str
    seconds: float


@dataclass(frozen=True)
class BuildPlan:
    """What `build` would do for one target, without doing it."""

    model_id: str
    target_name: str
    target: Target
    recipe: RecipeFile
    build_key: str
    cache_hit: bool


def build(request: BuildRequest, store: Store, progress: ProgressFn = silent) -> list[BuildResult]:
    """Build every requested target of one source; each is a cache hit or a validated registration.

    Raises:
        SourceError, Offline, RecipeNotFound, UnknownTarget, BackendFailed, ValidationFailed.
    """
    recipes = load_recipes()
    with open_source(request, store, progress) as source:
        plans = [plan_target(request, source, name, recipes, store) for name in request.targets]
        with checkpoint(source, plans, store, progress) as checkpoint_source:
            return [build_target(plan, checkpoint_source, store, progress) for plan in plans]


@contextlib.contextmanager
def checkpoint(
    source: Source, plans: list[BuildPlan], store: Store, progress: ProgressFn
) -> Iterator[Source]:
    """The source as a checkpoint folder: a GGUF file is dequantized once for all targets, in
    a staging folder, and not at all when every target is a cache hit (its key needs only the
    file's digest)."""
    if not source.needs_dequantizing or all(p.cache_hit for p in plans):
        yield source
        return

    with store.staging("gguf") as staging:
        yield dequantized(source, staging.path / "checkpoint", progress)


def plan(request: BuildRequest, store: Store, progress: ProgressFn = silent) -> list[BuildPlan]:
    """The build keys and cache state of a request, without building."""
    recipes = load_recipes()
    with open_source(request, store, progress) as source:
        return [plan_target(request, source, name, recipes, store) for name in request.targets]


def plan_target(
    request: BuildRequest, source: Source, name: str, recipes: list[RecipeFile], store: Store
) -> BuildPlan:
    recipe, target_name, target = pick(source.config, request.task, name, recipes)
    if request.backend:
        target = replace_backend(target, request.backend)
    tools = {**tool_versions(), **key_facts(target.options)}
    key = build_key(source.digest, recipe.recipe.name, target, tools)
    model_id = default_model_id(request, source, target_name)
    return BuildPlan(
        model_id, target_name, target, recipe, key, store.lookup_build(key) is not None
    )


def build_target(
    plan: BuildPlan, source: Source, store: Store, progress: ProgressFn
) -> BuildResult:
    started = time.perf_counter()
    if (hit := cache_hit(plan, store, started)) is not None:
        progress(ProgressEvent("cache", f"cache hit {short(plan.build_key)}", done=True))
        return hit
    with hold_lock(store, plan.build_key, progress):
        if (
            hit := cache_hit(plan, store, started)
        ) is not None:  # another process built it meanwhile
            progress(
                ProgressEvent(
                    "cache",
                    f"cache hit {short(plan.build_key)} (built by another process)",
                    done=True,
                )
            )
            return hit
        with store.staging(f"build-{short(plan.build_key)}") as staging:
            artifact = staging.path / "artifact"
            validation, record = run_passes(
                plan, source, artifact, staging.path / "build.log", progress, started
            )
            metadata = manifest_metadata(plan, source, artifact, validation, record)
            kill_point("build.packed")
            progress(ProgressEvent("register", plan.model_id))
            try:
                model = store.register(
                    artifact,
                    model_id=plan.model_id,
                    metadata=metadata,
                    build_key=plan.build_key,
                    progress=progress,
                )
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise disk_full(artifact) from exc
                raise
    return BuildResult(model, plan.target_name, False, validation, plan.build_key, record.seconds)


@contextlib.contextmanager
def hold_lock(store: Store, key: str, progress: ProgressFn) -> Iterator[None]:
    """The build key's lock; a wait for another process building the same key is reported."""
    from filelock import Timeout

    lock = store.lock(f"build-{key}")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(ProgressEvent("lock", f"waiting: another process is building {short(key)}"))
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def run_passes(
    plan: BuildPlan,
    source: Source,
    artifact: Path,
    log_path: Path,
    progress: ProgressFn,
    started: float,
) -> tuple[dict[str, Any], Any]:
    """Backend, validation and packing in the staging folder; third-party output goes to the log."""
    backend = load_backend(plan.target.backend)
    layers = int(source.config.get("num_hidden_layers") or 0)
    artifact.mkdir(parents=True)
    try:
        with captured_output(log_path, progress, layers=layers):
            facts = backend.run(source, plan.target, artifact, progress)
            recipe = plan.recipe.recipe
            validation = validate(
                artifact, source, plan.target, recipe.validation, progress, task=recipe.match.task
            )
            progress(ProgressEvent("pack", "tokenizer, inference_model.json, build.json"))
            record = pack(
                artifact,
                source,
                plan.recipe,
                plan.target_name,
                plan.target,
                model_id=plan.model_id,
                build_key=plan.build_key,
                backend_facts=facts,
                validation=validation,
                seconds=time.perf_counter() - started,
            )
    except FoundryError as exc:
        if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC:
            raise disk_full(artifact) from exc
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise disk_full(artifact) from exc
        raise BuildError(f"build failed: {exc}") from exc
    except Exception as exc:  # a third-party failure outside the backend wrappers
        raise BuildError(
            f"build failed: {type(exc).__name__}: {exc} ({log_tail(log_path)})"
        ) from exc
    return validation, record


def disk_full(where: Path) -> DiskFull:
    free = shutil.disk_usage(where.parent if where.parent.exists() else Path.cwd()).free
    return DiskFull(
        f"no space left on device while building in {where.parent} "
        f"({free / 1e9:.1f} GB free); nothing was registered",
        hint="free some space (foundry cache gc) or point FOUNDRY_HOME at a larger disk",
    )


def cache_hit(plan: BuildPlan, store: Store, started: float) -> BuildResult | None:
    """The registered artifact of this key (the ref is pointed at it), or None."""
    digest = store.lookup_build(plan.build_key)
    if digest is None:
        return None
    if store.ref_digest(plan.model_id) != digest:
        store.set_ref(plan.model_id, digest)
    model = store.cached_from_manifest(plan.model_id, digest)
    validation = dict(model.metadata.get("validation") or {})
    return BuildResult(
        model, plan.target_name, True, validation, plan.build_key, time.perf_counter() - started
    )


def manifest_metadata(
    plan: BuildPlan, source: Source, artifact: Path, validation: dict[str, Any], record: Any
) -> ModelMetadata:
    """What the runtime reads without opening files (INTERFACES.md: manifest metadata)."""
    recipe = plan.recipe.recipe
    return ModelMetadata(
        task=recipe.match.task,
        family=recipe.family,
        target=plan.target_name,
        device=plan.target.device,
        precision=plan.target.precision,
        provider=plan.target.provider,
        backend=plan.target.backend,
        synthetic=source.synthetic,
        source=source.origin,
        alias=source.alias,
        context_length=context_length(artifact, source),
        tool_parser=recipe.tool_parser,
        runnable=is_runnable(plan.target),
        build_key=plan.build_key,
        validation=validation,
        seconds=record.seconds,
        peak_rss_bytes=record.peak_rss_bytes,
        thinks=artifact_thinks(artifact) if recipe.match.task == "chat" else False,
    )


def default_model_id(request: BuildRequest, source: Source, target_name: str) -> str:
    """`--as` (exactly, for one target; `<as>-<target>` for several), the catalog variant id of a
    synthetic alias, else `<name>-<target>`."""
    if request.model_id:
        chosen = (
            request.model_id if len(request.targets) == 1 else f"{request.model_id}-{target_name}"
        )
        return check_model_id(chosen)
    if source.synthetic and source.alias:
        variant_id = catalog_variant_id(source.alias, target_name)
        if variant_id:
            return check_model_id(variant_id)
    stem = (
        "".join(c if c.isalnum() or c in "._-" else "-" for c in source.name).strip("-._")
        or "model"
    )
    return check_model_id(f"{stem.lower()}-{target_name}")


def catalog_variant_id(alias: str, target_name: str) -> str | None:
    """The catalog's variant id for this alias and target, when the catalog knows one."""
    try:
        from runtime.catalog import Catalog

        variant = Catalog.load().variant_for_target(alias, target_name)
    except (
        Exception
    ) as exc:  # no catalog, or an alias it does not know: fall back to <alias>-<target>
        log.debug("no catalog variant for %s %s: %s", alias, target_name, exc)
        return None
    return variant.id if variant is not None else None


def replace_backend(target: Target, backend: str) -> Target:
    """A target built by another backend; Olive-only `passes` are dropped outside Olive."""
    if backend not in BACKENDS:
        raise InvalidRequest(
            f"unknown backend {backend!r}; backends: {', '.join(sorted(BACKENDS))}", param="backend"
        )
    if backend == target.backend:
        return target
    options = (
        target.options.get("builder", target.options)
        if target.backend == "olive"
        else target.options
    )
    if backend == "olive" and "builder" not in target.options:
        options = {"builder": dict(target.options)}
    return replace_struct(
        target,
        backend=backend,
        options=dict(options),
        passes=[] if backend != "olive" else target.passes,
    )


def replace_struct(target: Target, **changes: Any) -> Target:
    import msgspec

    return msgspec.structs.replace(target, **changes)


@contextlib.contextmanager
def open_source(request: BuildRequest, store: Store, progress: ProgressFn) -> Iterator[Source]:
    """The checkpoint to build from; a synthetic one lives in a staging folder during the build."""
    if not request.synthetic:
        yield resolve_source(request.model, progress, gguf_file=request.gguf_file)
        return
    if request.layers is None and request.hidden is None:
        progress(
            ProgressEvent(
                "source",
                "synthetic checkpoint at the real dimensions (use --layers/--hidden to shrink)",
            )
        )
    with store.staging("synthetic") as staging:
        yield synthetic(
            request.model,
            staging.path / "checkpoint",
            progress,
            layers=request.layers,
            hidden=request.hidden,
        )
