"""Fetch a catalog variant into the store: prebuilt artifacts from the hub, or compile a checkpoint.

Reads like Ollama's `PullModel`: resolve the variant, return at once if it is cached, list the
remote files, fetch each one resumably, verify it against the hub's own digest, validate the
folder, then register it (manifest last). Nothing is registered unless every file verified
and the folder loaded.

Resume: `huggingface_hub` 2.x retries and resumes with `Range` inside one call, but deletes
its partial file when the call fails, so a killed process would start again from zero. Each
file is therefore written to `$FOUNDRY_HOME/downloads/<expected digest>.partial`, outside the
store's swept `tmp/`, and handed to the hub client's `http_get(resume_size=...)`; the next
run continues where the last one stopped, and the final hash check catches any damage.

The hub address (`HF_ENDPOINT`), offline mode (`HF_HUB_OFFLINE`) and the token are read at
call time and passed explicitly (huggingface_hub reads `HF_ENDPOINT` at import time).
Never imports compiler at module level; huggingface_hub and onnxruntime are imported inside.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from runtime.artifact import artifact_thinks, validate_artifact
from runtime.artifact_policy import MAX_SIDE_FILE_BYTES, SIDE_FILES, check_relative_name
from runtime.errors import (
    DiskFull,
    DownloadCorrupt,
    DownloadFailed,
    ModelNotFound,
    NotInstalled,
    Offline,
    ProviderUnavailable,
    UnsafeArtifact,
)
from runtime.kill_points import kill_point
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.settings import env, foundry_home

if TYPE_CHECKING:
    from filelock import FileLock

    from runtime.catalog import ArtifactSource, Catalog, Variant
    from runtime.hardware import Hardware
    from runtime.store import CachedModel, Store

__all__ = [
    "RemoteFile",
    "download",
    "hub_endpoint",
    "is_offline",
    "resolve_variant",
    "validate_artifact",
]

log = logging.getLogger(__name__)
DEFAULT_ENDPOINT = "https://huggingface.co"
RETRIES = 5  # consecutive failures without new bytes before giving up (as huggingface_hub does)
RETRY_PAUSE = 0.5
DOWNLOAD_TIMEOUT = 30.0
COMPILER_HINT = "pip install 'foundry-build[compiler]'"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


def hub_endpoint() -> str:
    """`$HF_ENDPOINT`, read now (not when huggingface_hub was imported)."""
    return (env("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    value = (env("HF_HUB_OFFLINE") or env("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return value in {"1", "true", "yes", "on"}


def partial_dir() -> Path:
    """Where unfinished downloads wait to be resumed (outside the store's swept tmp/)."""
    return foundry_home() / "downloads"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub folder and the digest the hub vouches for."""

    path: str  # path in the repo
    relative: str  # path inside the artifact folder (the subfolder stripped)
    size: int
    sha256: str | None  # LFS files: the hub's sha256 (also their ETag)
    git_sha1: str | None  # other files: the git blob id (their ETag)

    @property
    def partial_name(self) -> str:
        return f"{self.sha256 or self.git_sha1 or hashlib.sha256(self.path.encode()).hexdigest()}.partial"


# --- the pipeline -------------------------------------------------------------------------
def resolve_variant(
    alias_or_id: str,
    *,
    device: str | None = None,
    hardware: Hardware | None = None,
    catalog: Catalog | None = None,
) -> Variant:
    """The variant a name means here: an alias picks the best variant, an id itself.

    Raises:
        ModelNotFound: unknown name (close matches in the hint).
        ProviderUnavailable: the variant needs an execution provider this machine lacks.
    """
    from runtime.catalog import Catalog
    from runtime.hardware import detect

    catalog = catalog or Catalog.load()
    hardware = hardware or detect()
    _, variant = catalog.find(alias_or_id, device, hardware)
    if not hardware.has_provider(variant.provider):
        runnable = [
            v.id for v in catalog.variants(variant.alias) if hardware.has_provider(v.provider)
        ]
        raise ProviderUnavailable(
            f"variant {variant.id!r} needs the {variant.provider} execution provider, which is not "
            f"available here (available: {', '.join(sorted(hardware.providers))})",
            hint=f"variants that run here: {', '.join(runnable)}"
            if runnable
            else "no variant of this model runs here",
        )
    return variant


def already_cached(model_id: str, store: Store, progress: ProgressFn = silent) -> CachedModel:
    """The cached `model_id`, announced as one finished download event: what a download of a
    model the store already holds answers, whether or not the catalog lists it."""
    cached = store.resolve(model_id)
    size = cached.size
    progress(ProgressEvent("download", f"{model_id} is already cached", size, size, "B", done=True))
    return cached


def download(
    alias_or_id: str,
    store: Store | None = None,
    progress: ProgressFn = silent,
    device: str | None = None,
    *,
    hardware: Hardware | None = None,
    catalog: Catalog | None = None,
) -> CachedModel:
    """Make a catalog model available in the store and return it.

    Already cached -> returned at once, without touching the network. A prebuilt variant is
    fetched from the hub (resumable, verified, validated), or pulled from its `oci://` registry
    as `foundry cache pull` does; a checkpoint variant is compiled by `compiler.build` (the
    `[compiler]` extra).

    Raises:
        ModelNotFound, ProviderUnavailable: see `resolve_variant`; also a repo/file the hub lacks.
        Offline: not cached and `HF_HUB_OFFLINE` is set or the hub cannot be reached.
        DownloadCorrupt: a file does not match the hub's digest (nothing is registered).
        DiskFull: the disk filled up (nothing is registered; the space needed is reported).
        ValidationFailed: the folder does not load in onnxruntime(-genai).
        NotInstalled: a checkpoint variant without the `[compiler]` extra.
    """
    from runtime.store import Store

    store = store or Store()
    variant = resolve_variant(alias_or_id, device=device, hardware=hardware, catalog=catalog)
    if store.has(variant.id):
        return already_cached(variant.id, store, progress)
    if (
        is_offline() and variant.spec.registry is None
    ):  # the hub's switch; a registry is not the hub
        raise Offline(
            f"model {variant.id!r} is not in the cache and HF_HUB_OFFLINE is set, so it cannot be downloaded",
            hint="unset HF_HUB_OFFLINE and run again, or `foundry-build "
            + variant.alias
            + " --synthetic` to work offline",
        )
    with store.lock(f"download-{variant.id}"):
        if store.has(variant.id):  # another process finished it while we waited
            return store.resolve(variant.id)
        if variant.spec.registry is not None:
            return _pull_registry(variant, store, progress)
        if variant.is_prebuilt:
            return _fetch_artifact(variant, store, progress)
        return _compile_checkpoint(variant, store, progress)


def _fetch_artifact(variant: Variant, store: Store, progress: ProgressFn) -> CachedModel:
    source = variant.spec.artifact
    assert source is not None
    commit, files = list_remote_files(source)
    total = sum(f.size for f in files)
    _check_space(variant, 2 * total)  # the downloaded files, then their copies as store blobs
    progress(
        ProgressEvent(
            "download", f"{variant.id}: {len(files)} files from {source.repo}", 0, total, "B"
        )
    )
    done = 0
    with store.staging(f"download-{variant.base_id}") as staging:
        for remote in files:
            fetch_file(
                source.repo,
                commit,
                remote,
                staging.path / remote.relative,
                _offset(progress, done, total, variant),
                lock=store.lock(f"partial-{remote.partial_name}"),
            )
            done += remote.size
        kill_point("download.fetched")
        progress(ProgressEvent("validate", f"loading {variant.id} in onnxruntime-genai"))
        validate_artifact(staging.path, variant.task)
        _write_inference_model(staging.path, variant)
        metadata = msgspec.structs.replace(
            variant.metadata(),
            source=f"hf://{source.repo}@{commit}"
            + (f"/{source.subfolder}" if source.subfolder else ""),
            runnable=True,
            thinks=artifact_thinks(staging.path) if variant.task == "chat" else False,
        )
        try:
            cached = store.register(
                staging.path, model_id=variant.id, metadata=metadata, progress=progress
            )
        except (
            OSError
        ) as exc:  # blobs written so far are unreferenced: `foundry cache gc` frees them
            if exc.errno == errno.ENOSPC:
                raise _disk_full(variant.id, total) from exc
            raise
    # No partial is left to clean: fetch_file moved each into staging. (Unlinking them here by
    # name deleted the .partial of another download of a shared file while it was writing it.)
    progress(ProgressEvent("download", f"{variant.id} ready", total, total, "B", done=True))
    return cached


def _pull_registry(variant: Variant, store: Store, progress: ProgressFn) -> CachedModel:
    """An `oci://` variant: `foundry model download oci://…`'s pull, registered under the variant id."""
    from runtime.oci.reference import Reference
    from runtime.oci.transfer import pull

    assert variant.spec.registry is not None
    ref = Reference.parse(variant.spec.registry)
    return pull(store, ref, progress, model_id=variant.id, task=variant.task).model


def _compile_checkpoint(variant: Variant, store: Store, progress: ProgressFn) -> CachedModel:
    """A source-only variant: the compiler downloads the checkpoint and builds the target."""
    try:
        from compiler.build import BuildRequest, build
    except ImportError as exc:
        raise NotInstalled(
            f"model {variant.id!r} is compiled from {variant.source_uri}, which needs the compiler extra "
            f"(missing: {exc.name or exc})",
            hint=COMPILER_HINT,
        ) from exc
    checkpoint = variant.spec.checkpoint
    assert checkpoint is not None
    request = BuildRequest(
        model=f"{checkpoint.repo}@{checkpoint.revision}",
        targets=[variant.target],
        model_id=variant.id,
        task=variant.task,
    )
    results = build(request, store, progress)
    return results[0].model


# --- hub access -------------------------------------------------------------------------------
def list_remote_files(source: ArtifactSource) -> tuple[str, list[RemoteFile]]:
    """The commit a revision points at and the files under the subfolder, with their digests.

    Raises:
        ModelNotFound: the repo, revision or subfolder is not on the hub.
        Offline: the hub cannot be reached.
    """
    from huggingface_hub import HfApi

    with _hub_errors(f"{source.repo}@{source.revision}"):
        info = HfApi(endpoint=hub_endpoint()).model_info(
            source.repo, revision=source.revision, files_metadata=True
        )
    prefix = f"{source.subfolder.strip('/')}/" if source.subfolder else ""
    files = []
    for sibling in info.siblings or []:
        if not sibling.rfilename.startswith(prefix):
            continue
        lfs = sibling.lfs
        files.append(
            _checked(
                RemoteFile(
                    path=sibling.rfilename,
                    relative=sibling.rfilename[len(prefix) :],
                    size=int(lfs.size if lfs else sibling.size or 0),
                    sha256=lfs.sha256 if lfs else None,
                    git_sha1=None if lfs else sibling.blob_id,
                ),
                source.repo,
            )
        )
    if not files:
        raise ModelNotFound(
            f"{source.repo}@{source.revision} has no files under {source.subfolder!r} on {hub_endpoint()}",
            hint="check the catalog entry's `artifact.subfolder`",
        )
    return str(info.sha), files


def _checked(remote: RemoteFile, repo: str) -> RemoteFile:
    """A listed file whose name and digests may become paths (a hub, or a mirror behind
    HF_ENDPOINT, is untrusted): the same rule as for names inside a model folder.

    Raises:
        UnsafeArtifact: `..`, absolute or odd names, digests that are not hex, a side file
            (tokenizer, config) claiming more than the policy accepts.
    """
    what = f"{repo} lists {remote.path!r}"
    check_relative_name(Path("/nonexistent-root"), remote.relative, what)
    if remote.sha256 is not None and not _SHA256.fullmatch(remote.sha256):
        raise UnsafeArtifact(f"{what} with a malformed sha256 {remote.sha256[:80]!r}")
    if remote.git_sha1 is not None and not _GIT_SHA1.fullmatch(remote.git_sha1):
        raise UnsafeArtifact(f"{what} with a malformed blob id {remote.git_sha1[:80]!r}")
    if remote.relative in SIDE_FILES and remote.size > MAX_SIDE_FILE_BYTES:
        raise UnsafeArtifact(
            f"{what} at {remote.size:,} bytes; at most {MAX_SIDE_FILE_BYTES:,} are accepted"
        )
    return remote


def fetch_file(
    repo: str,
    commit: str,
    remote: RemoteFile,
    dest: Path,
    progress: ProgressFn = silent,
    *,
    lock: FileLock,
) -> None:
    """Download one file (resuming a partial one), verify it, and move it to `dest`.

    Raises:
        DownloadCorrupt: the bytes do not match the hub's digest (the partial is deleted).
        DiskFull: no space left (the partial is deleted to give the space back).
        DownloadFailed: the connection kept failing (the partial stays for the next run).
    """
    partial = partial_dir() / remote.partial_name
    partial.parent.mkdir(parents=True, exist_ok=True)
    # Two variants that share a file (same digest) would otherwise append to one .partial at once.
    with _partial_lock(lock, remote, progress):
        _fetch_into(partial, repo, commit, remote, progress)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(partial, dest)


def _fetch_into(
    partial: Path, repo: str, commit: str, remote: RemoteFile, progress: ProgressFn
) -> None:
    """Resume `partial` to the whole file and verify it (the caller holds its lock)."""
    from huggingface_hub import hf_hub_url

    if partial.exists() and partial.stat().st_size > remote.size:
        partial.unlink()
    url = hf_hub_url(repo, remote.path, revision=commit, endpoint=hub_endpoint())
    try:
        with _open_partial(partial) as handle:
            _stream(url, handle, remote, progress, what=f"{repo}/{remote.path}")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            partial.unlink(missing_ok=True)
            raise _disk_full(remote.relative, remote.size) from exc
        raise DownloadFailed(
            f"download of {remote.path} from {repo} stopped: {exc}",
            hint="run the same command again to resume",
        ) from exc
    _verify(partial, remote, repo)


def _stream(
    url: str, handle: BinaryIO, remote: RemoteFile, progress: ProgressFn, *, what: str
) -> None:
    """GET `url` into `handle` from its current end, resuming with `Range` after a dropped connection.

    Uses the hub client's own HTTP session (proxies, user agent, token headers). We stream
    ourselves rather than through `file_download.http_get` because that buffers 10 MB chunks
    and drops the partial file on failure, which would make a killed download start over.
    """
    import httpx2
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    retries = RETRIES
    while True:
        done = handle.tell()
        progress(ProgressEvent("download", remote.relative, done, remote.size, "B"))
        if done >= remote.size:
            return
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"
        if done:
            headers["Range"] = f"bytes={done}-"
        try:
            with (
                _hub_errors(what),
                get_session().stream(
                    "GET", url, headers=headers, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT
                ) as response,
            ):
                hf_raise_for_status(response)
                if done and response.status_code == 200:  # the server ignored Range: start over
                    handle.seek(0)
                    handle.truncate()
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    kill_point("download.bytes")
                    progress(
                        ProgressEvent("download", remote.relative, handle.tell(), remote.size, "B")
                    )
            handle.flush()
            if handle.tell() >= remote.size:
                return
        except (DownloadFailed, Offline) as exc:
            retries = RETRIES if handle.tell() > done else retries - 1  # new bytes reset the budget
            if not isinstance(exc.__cause__, httpx2.TransportError) or retries <= 0:
                raise
            log.warning(
                "download of %s interrupted at %d bytes (%s); resuming",
                what,
                handle.tell(),
                exc.__cause__,
            )
        else:
            retries -= 1
            if retries <= 0:
                raise DownloadFailed(
                    f"download of {what} ended early", hint="run the same command again to resume"
                )
        time.sleep(RETRY_PAUSE)


def _verify(path: Path, remote: RemoteFile, repo: str) -> None:
    if remote.sha256:
        hasher, expected = hashlib.sha256(), remote.sha256
    elif remote.git_sha1:
        hasher, expected = hashlib.sha1(b"blob %d\0" % path.stat().st_size), remote.git_sha1
    else:
        return
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    if hasher.hexdigest() != expected:
        path.unlink(missing_ok=True)
        raise DownloadCorrupt(
            f"{remote.path} from {repo} does not match the hub's checksum "
            f"(expected {expected[:12]}…, got {hasher.hexdigest()[:12]}…); nothing was registered",
            hint="run the download again; if it keeps failing the mirror serves damaged files",
        )


@contextmanager
def _hub_errors(what: str) -> Iterator[None]:
    """Turn the hub client's exceptions into our leaves, naming what was asked for."""
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise ModelNotFound(
            f"{what} was not found on {hub_endpoint()} ({type(exc).__name__})",
            hint="check the catalog entry's repo, revision and subfolder",
        ) from exc
    except OfflineModeIsEnabled as exc:
        raise Offline(f"cannot download {what}: huggingface_hub is in offline mode") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 404:
            raise ModelNotFound(f"{what} was not found on {hub_endpoint()} (HTTP 404)") from exc
        raise DownloadFailed(
            f"the hub refused {what} (HTTP {status})", hint="set HF_TOKEN for gated models"
        ) from exc
    except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
        raise Offline(
            f"cannot reach the Hugging Face hub at {hub_endpoint()} to download {what}",
            hint="check the network or HF_ENDPOINT; cached models keep working offline",
        ) from exc
    except httpx2.HTTPError as exc:
        raise DownloadFailed(
            f"download of {what} was interrupted: {exc}",
            hint="run the same command again to resume",
        ) from exc


def _write_inference_model(folder: Path, variant: Variant) -> None:
    """Foundry Local reads `inference_model.json`; hub folders may lack it."""
    target = folder / "inference_model.json"
    if not target.exists() and variant.entry.prompt_template:
        body = {"Name": variant.id, "PromptTemplate": dict(variant.entry.prompt_template)}
        target.write_text(json.dumps(body, indent=2) + "\n")


# --- small helpers ------------------------------------------------------------------------------
@contextmanager
def _partial_lock(lock: FileLock, remote: RemoteFile, progress: ProgressFn) -> Iterator[None]:
    """Hold the store's lock for one .partial while writing it; a wait for another download is
    reported.

    The waiter then fetches the file itself (the holder moved the finished one into its own
    staging folder): the same bytes twice, never two writers of one file.
    """
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(
            ProgressEvent("download", f"{remote.relative}: waiting for another download of it")
        )
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _open_partial(path: Path) -> Iterator[BinaryIO]:
    # Unbuffered: every byte received is on disk, so a kill loses nothing that was written.
    handle = path.open("r+b", buffering=0) if path.exists() else path.open("wb", buffering=0)
    try:
        handle.seek(0, 2)
        yield handle
        handle.flush()
    finally:
        handle.close()


def _offset(progress: ProgressFn, done: int, total: int, variant: Variant) -> ProgressFn:
    """Turn one file's byte events into events over the whole variant (`message` names the file)."""

    def forward(event: ProgressEvent) -> None:
        if event.total is None:  # a note (a wait), not bytes
            progress(ProgressEvent("download", f"{variant.id}: {event.message}"))
            return
        completed = done + (event.completed or 0)
        progress(ProgressEvent("download", f"{variant.id}: {event.message}", completed, total, "B"))

    return forward


def _check_space(variant: Variant, needed: int) -> None:
    home = foundry_home()
    home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(home).free
    if needed > free:
        raise _disk_full(variant.id, needed, free)


def _disk_full(what: str, needed: int, free: int | None = None) -> DiskFull:
    if free is None:
        free = shutil.disk_usage(foundry_home()).free if foundry_home().exists() else 0
    return DiskFull(
        f"not enough disk space for {what}: needs about {needed / 1e9:.2f} GB, "
        f"{free / 1e9:.2f} GB free in {foundry_home()}; nothing was registered",
        hint="free some space (`foundry cache gc`) and run again",
    )
