"""`foundry-build --matrix FILE.yaml`: sources x targets, one JSON report, past failing entries.

    schema: 1
    remote: oci://registry.example/team/cache    # optional: every entry looks up / pushes its key
    targets: [cpu-int4, cpu-fp32]                 # default for every source
    sources:
      - model: Qwen/Qwen2.5-0.5B-Instruct
      - model: qwen2.5-0.5b
        synthetic: true
        layers: 2
        hidden: 64
        targets: [cpu-int4]                       # overrides the default
        id: tiny-qwen                             # model ids become tiny-qwen-<target>

Each source is resolved once; each target is one entry: a local hit, a remote hit, or a build
(pushed when a remote is set). A failing entry (its recipe's quality floor missed, a backend
error, a source that does not resolve) is reported and the next one runs; the run fails at the end.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from runtime.errors import BuildError, FoundryError, RecipeError
from runtime.progress import ProgressFn, silent

if TYPE_CHECKING:
    from runtime.oci.reference import Reference
    from runtime.store import Store

__all__ = ["Entry", "Matrix", "MatrixFailed", "load_matrix", "run_matrix"]


class MatrixSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    id: str | None = None
    synthetic: bool = False
    layers: Annotated[int, Meta(ge=1, le=256)] | None = None
    hidden: Annotated[int, Meta(ge=16, le=16384)] | None = None
    task: Literal["chat", "embeddings", "speech"] | None = None
    targets: list[str] | None = None


class Matrix(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    schema: Literal[1]
    sources: Annotated[list[MatrixSource], Meta(min_length=1)]
    targets: list[str] = msgspec.field(default_factory=lambda: ["cpu-int4"])
    remote: str | None = None

    def entries(self) -> list[tuple[MatrixSource, str]]:
        return [(s, t) for s in self.sources for t in (s.targets or self.targets)]


Status = Literal["built", "cache hit", "remote hit", "failed"]


class Entry(msgspec.Struct, kw_only=True):
    """One line of the report: what `foundry-build --json` says of a target, plus its outcome."""

    model: str
    target: str
    status: Status
    id: str | None = None
    build_key: str | None = None
    cache_hit: bool = False
    remote: str | None = None
    validation: dict[str, Any] = {}
    seconds: float = 0.0
    peak_rss_bytes: int | None = None
    error: str | None = None
    error_code: str | None = None


class MatrixReport(msgspec.Struct, kw_only=True):
    matrix: str
    remote: str | None
    entries: list[Entry]
    failed: int
    seconds: float


class MatrixFailed(BuildError):
    """`2 of 6 matrix entries failed (see matrix-report.json)`"""

    code = "matrix_failed"


def load_matrix(path: Path) -> Matrix:
    """Raises RecipeError naming the file and the path inside it (msgspec's message)."""
    try:
        return msgspec.yaml.decode(path.read_bytes(), type=Matrix)
    except FileNotFoundError:
        raise RecipeError(f"matrix file {str(path)!r} does not exist") from None
    except msgspec.ValidationError as exc:
        raise RecipeError(
            f"{path.name}: {exc}", hint="see compiler/matrix.py for the schema"
        ) from exc
    except msgspec.DecodeError as exc:
        raise RecipeError(f"{path.name} is not valid YAML: {exc}") from exc


def run_matrix(
    matrix: Matrix, name: str, store: Store, remote: Reference | None, progress: ProgressFn = silent
) -> MatrixReport:
    started = time.perf_counter()
    entries: list[Entry] = []
    for source in matrix.sources:
        targets = source.targets or matrix.targets
        entries += _run_source(source, targets, store, remote, progress)
    failed = sum(e.status == "failed" for e in entries)
    return MatrixReport(
        matrix=name,
        remote=str(remote) if remote else None,
        entries=entries,
        failed=failed,
        seconds=round(time.perf_counter() - started, 3),
    )


def _run_source(
    source: MatrixSource,
    targets: list[str],
    store: Store,
    remote: Reference | None,
    progress: ProgressFn,
) -> list[Entry]:
    from compiler.build import BuildRequest, open_source, plan_target
    from compiler.recipe import load_recipes
    from compiler.remote_cache import build_one

    request = BuildRequest(
        model=source.model,
        targets=list(dict.fromkeys(targets)),
        synthetic=source.synthetic,
        layers=source.layers,
        hidden=source.hidden,
        task=source.task,
    )
    entries = []
    try:
        with open_source(request, store, progress) as opened:
            recipes = load_recipes()
            for target in request.targets:
                try:
                    plan = plan_target(
                        _for_target(request, source, target), opened, target, recipes, store
                    )
                    built = build_one(plan, opened, store, remote, progress)
                    entries.append(_entry(source, target, built, remote is not None))
                except FoundryError as exc:
                    entries.append(_failed(source, target, exc))
    except FoundryError as exc:  # the source itself did not resolve: every target fails
        done = {e.target for e in entries}
        entries += [_failed(source, t, exc) for t in request.targets if t not in done]
    return entries


def _for_target(request: Any, source: MatrixSource, target: str) -> Any:
    """`id: X` gives `X-<target>` per entry (BuildRequest's `--as` is exact for one target)."""
    model_id = f"{source.id}-{target}" if source.id else None
    return replace(request, targets=[target], model_id=model_id)


def _entry(source: MatrixSource, target: str, built: Any, has_remote: bool) -> Entry:
    result = built.result
    status: Status = "built"
    if result.cache_hit:
        status = "remote hit" if built.remote == "hit" else "cache hit"
    return Entry(
        model=source.model,
        target=target,
        status=status,
        id=result.model.model_id,
        build_key=result.build_key,
        cache_hit=result.cache_hit,
        remote=built.remote if has_remote else None,
        validation=result.validation,
        seconds=round(result.seconds, 3),
        peak_rss_bytes=result.model.metadata.get("peak_rss_bytes"),
    )


def _failed(source: MatrixSource, target: str, exc: FoundryError) -> Entry:
    return Entry(
        model=source.model, target=target, status="failed", error=exc.message, error_code=exc.code
    )
