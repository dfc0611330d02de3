"""The content-addressed store: blobs, manifests, refs, build keys, snapshots.

Order is the protocol: blobs -> manifest (the commit point) -> ref / build-key entry;
removal goes in reverse. Every write goes through `atomic.atomic_write`, so a crash
leaves only garbage under `tmp/`, swept when the store is next opened. Locks only save
duplicate work; correctness never depends on them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

import msgspec
from filelock import FileLock

from runtime.errors import CorruptBlob, ManifestNotFound, ModelNotFound, StoreError
from runtime.kill_points import kill_point
from runtime.names import check_model_id, parse_digest
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.settings import cache_dir
from runtime.store.atomic import CHUNK, atomic_write, hash_file, staged_file
from runtime.store.layout import Layout
from runtime.store.manifest import FileEntry, Manifest, digest_bytes, encode_canonical
from runtime.store.metadata import ModelMetadata

__all__ = ["CachedModel", "Manifest", "Staging", "Store"]

log = logging.getLogger(__name__)
MANIFEST_SCHEMA = 1
OWNER_SUFFIX = ".owner"


@contextmanager
def _owned(owner: Path) -> Iterator[None]:
    """Hold an OS lock on `owner` while a staging folder is alive; the OS drops it on any death."""
    handle = owner.open("a+b")
    try:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        owner.unlink(missing_ok=True)
        handle.close()


def _owner_is_dead(owner: Path) -> bool:
    """True when nobody holds the owner lock (its writer exited or was killed)."""
    if fcntl is None:  # no flock (Windows): leave it to the age rule
        return time.time() - owner.stat().st_mtime > 3600
    with owner.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return True


@contextmanager
def _flock(
    path: Path, *, exclusive: bool, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """An OS lock on `path`, shared or exclusive, dropped by the OS on any death (kill -9).

    `on_wait` is called once if the lock is busy, before blocking on it. No flock (Windows):
    no exclusion, as before.
    """
    if fcntl is None:
        yield
        return
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
        except OSError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle.fileno(), mode)
        yield


def _make_read_only(path: Path) -> None:
    """Before a blob gets its real name: snapshots are hard links to its inode, so a write
    through a snapshot would silently change every model that shares the blob."""
    path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)


@dataclass(frozen=True)
class CachedModel:
    """A registered model variant as the runtime sees it."""

    model_id: str
    manifest_digest: str
    manifest: Manifest
    path: Path  # the snapshot folder an engine loads

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.metadata

    @functools.cached_property
    def info(self) -> ModelMetadata:
        """The metadata, typed (store/metadata.py)."""
        return ModelMetadata.read(self.manifest.metadata)

    @property
    def size(self) -> int:
        return self.manifest.size


@dataclass
class Staging:
    """A private folder under tmp/ where a build or download assembles its files."""

    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


class Store:
    def __init__(self, root: Path | None = None, *, sweep: bool = True):
        self.layout = Layout(Path(root) if root is not None else cache_dir())
        for directory in self.layout.all_dirs():
            directory.mkdir(parents=True, exist_ok=True)
        if sweep:
            self.sweep_tmp()

    @property
    def root(self) -> Path:
        return self.layout.root

    # --- staging and locks ---------------------------------------------------
    def sweep_tmp(self, older_than: float = 3600.0) -> int:
        """Remove leftovers of crashed writers.

        A staging folder has a sibling `<name>.owner` file its writer holds an OS lock on
        (flock), so a folder whose writer died (kill -9) is removed on the next start whatever
        its age; anything else only when older than `older_than` (a live writer may own it).
        """
        removed = 0
        now = time.time()
        for entry in sorted(self.layout.tmp.iterdir()):
            with suppress(OSError):
                if entry.name.endswith(OWNER_SUFFIX):
                    if _owner_is_dead(entry):
                        shutil.rmtree(
                            entry.with_name(entry.name[: -len(OWNER_SUFFIX)]), ignore_errors=True
                        )
                        entry.unlink(missing_ok=True)
                        removed += 1
                    continue
                if entry.with_name(entry.name + OWNER_SUFFIX).exists():
                    continue  # judged by its owner file
                if now - entry.lstat().st_mtime < older_than:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
                removed += 1
        return removed

    @contextmanager
    def staging(self, name: str) -> Iterator[Staging]:
        path = self.layout.tmp / f"{name}-{uuid.uuid4().hex[:8]}"
        with _owned(path.with_name(path.name + OWNER_SUFFIX)):
            path.mkdir(parents=True)
            try:
                yield Staging(path)
            finally:
                shutil.rmtree(path, ignore_errors=True)

    def lock(self, name: str) -> FileLock:
        """A per-key inter-process lock (filelock); the caller uses it as a context manager."""
        safe = hashlib.sha256(name.encode()).hexdigest()[:32]
        return FileLock(str(self.layout.lock(safe)))

    # --- writes: blobs -> manifest -> ref -----------------------------------------
    def put_blob(self, source: Path) -> FileEntry:
        """Copy a file into blobs/, hashing while copying; identical content is stored once."""
        with staged_file(self.layout.tmp, "blob") as staged, source.open("rb") as src:
            while chunk := src.read(CHUNK):
                staged.write(chunk)
            entry = FileEntry(staged.digest, staged.size)
            target = self.layout.blob(entry.digest)
            if not target.exists():
                _make_read_only(staged.path)
                staged.handle.flush()
                kill_point("store.blob")
                staged.commit(target)
        return entry

    def put_manifest(self, manifest: Manifest) -> str:
        """Write a manifest under its own digest: the commit point of a registration."""
        data = encode_canonical(manifest)
        digest = digest_bytes(data)
        target = self.layout.manifest(digest)
        if not target.exists():
            atomic_write(target, data, self.layout.tmp)
        return digest

    def set_ref(self, model_id: str, manifest_digest: str) -> None:
        atomic_write(
            self.layout.ref(model_id), parse_digest(manifest_digest).encode(), self.layout.tmp
        )

    def set_build(self, build_key: str, manifest_digest: str) -> None:
        atomic_write(
            self.layout.build(build_key), parse_digest(manifest_digest).encode(), self.layout.tmp
        )

    def register(
        self,
        folder: Path,
        *,
        model_id: str,
        metadata: ModelMetadata | None = None,
        build_key: str | None = None,
        progress: ProgressFn = silent,
    ) -> CachedModel:
        """Store every file under `folder` and point `model_id` (and `build_key`) at them.

        The folder is only read; callers assemble it in `staging()` first.
        """
        check_model_id(model_id)
        with self.registering():
            return self._register(folder, model_id, metadata, build_key, progress)

    @contextmanager
    def registering(self) -> Iterator[None]:
        """Held (shared) while blobs are written and not yet reachable from a ref: `gc` takes
        the same lock exclusively, so it never deletes a blob a registration is about to
        point at (the review's race), and registrations never wait on one another."""
        with _flock(self.layout.lock("registration"), exclusive=False):
            yield

    def _register(
        self,
        folder: Path,
        model_id: str,
        metadata: ModelMetadata | None,
        build_key: str | None,
        progress: ProgressFn,
    ) -> CachedModel:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in files)
        entries: dict[str, FileEntry] = {}
        done = 0
        for path in files:
            entries[path.relative_to(folder).as_posix()] = self.put_blob(path)
            done += path.stat().st_size
            progress(ProgressEvent("register", path.name, done, total, "B"))
        kill_point("store.register.blobs")
        manifest = Manifest(
            schema=MANIFEST_SCHEMA,
            model_id=model_id,
            files=entries,
            metadata=(metadata or ModelMetadata()).encode(),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        digest = self.put_manifest(manifest)
        kill_point("store.register.manifest")
        if build_key is not None:
            self.set_build(build_key, digest)
        self.set_ref(model_id, digest)
        progress(ProgressEvent("register", model_id, total, total, "B", done=True))
        return self._cached(model_id, digest)

    def commit_blob(self, staged: Path, digest: str) -> FileEntry:
        """Move a file under tmp/ that its writer hashed to `digest` into blobs/ (a rename).

        For transfers that hash while they receive (registry pulls, bundles), so a large blob is
        not copied a second time. Identical content already present wins; `staged` is consumed.
        """
        target = self.layout.blob(parse_digest(digest))
        size = staged.stat().st_size
        if target.exists():
            staged.unlink(missing_ok=True)
        else:
            with staged.open("rb") as handle:
                os.fsync(handle.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            _make_read_only(staged)
            staged.replace(target)
            kill_point("store.commit_blob")
        return FileEntry(digest, size)

    def register_manifest(
        self, manifest: Manifest, *, model_id: str | None = None, build_key: str | None = None
    ) -> CachedModel:
        """Register a manifest whose blobs are all in the store already (pulled or unbundled).

        Written as it came, so its digest is the same as on the machine that built it; `model_id`
        (default: the manifest's own) is the ref pointed at it. Raises CorruptBlob when a blob
        is missing or has the wrong size: nothing is registered then.
        """
        model_id = check_model_id(model_id or manifest.model_id)
        for rel, entry in manifest.files.items():
            blob = self.layout.blob(entry.digest)
            if not blob.is_file() or blob.stat().st_size != entry.size:
                raise CorruptBlob(
                    f"blob {entry.digest} of {rel!r} is missing or truncated",
                    hint="run the transfer again",
                )
        digest = self.put_manifest(manifest)
        kill_point("store.register.manifest")
        if build_key is not None:
            self.set_build(build_key, digest)
        self.set_ref(model_id, digest)
        return self._cached(model_id, digest)

    # --- reads -------------------------------------------------------------------
    def read_manifest(self, digest: str) -> Manifest:
        path = self.layout.manifest(digest)
        try:
            return msgspec.json.decode(path.read_bytes(), type=Manifest)
        except FileNotFoundError:
            raise ManifestNotFound(f"manifest {digest} is not in the store") from None
        except msgspec.DecodeError as exc:
            raise StoreError(
                f"manifest {digest} is damaged: {exc}", hint="foundry cache verify"
            ) from exc

    def ref_digest(self, model_id: str) -> str | None:
        try:
            return parse_digest(self.layout.ref(model_id).read_text().strip())
        except FileNotFoundError:
            return None

    def has(self, model_id: str) -> bool:
        return self.ref_digest(model_id) is not None

    def resolve(self, model_id: str) -> CachedModel:
        """The loadable folder of a cached model id.

        Raises:
            ModelNotFound: no ref of that name.
        """
        digest = self.ref_digest(model_id)
        if digest is None:
            raise ModelNotFound(
                f"model {model_id!r} is not in the cache",
                hint="foundry cache list  # shows what is cached",
                param="model",
            )
        return self._cached(model_id, digest)

    def lookup_build(self, build_key: str) -> str | None:
        """The manifest digest a build key produced before, if it is still whole."""
        try:
            digest = parse_digest(self.layout.build(build_key).read_text().strip())
        except FileNotFoundError:
            return None
        return digest if self.layout.manifest(digest).exists() else None

    def cached_from_manifest(self, model_id: str, digest: str) -> CachedModel:
        return self._cached(model_id, digest)

    def list_models(self) -> list[CachedModel]:
        models = []
        for ref in sorted(self.layout.refs.iterdir()):
            model_id = ref.name.replace("@", ":")
            with suppress(Exception):
                digest = parse_digest(ref.read_text().strip())
                models.append(
                    CachedModel(
                        model_id, digest, self.read_manifest(digest), self.layout.snapshot(digest)
                    )
                )
        return models

    def _cached(self, model_id: str, digest: str) -> CachedModel:
        manifest = self.read_manifest(digest)
        return CachedModel(model_id, digest, manifest, self.snapshot(digest, manifest))

    def snapshot(self, digest: str, manifest: Manifest | None = None) -> Path:
        """The folder of hard links an engine loads; built once, atomically (rename of a dir)."""
        target = self.layout.snapshot(digest)
        if target.exists():
            return target
        manifest = manifest or self.read_manifest(digest)
        with self.staging("snapshot") as staging:
            for rel, entry in manifest.files.items():
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise StoreError(f"manifest {digest} names an unsafe path {rel!r}")
                blob = self.layout.blob(entry.digest)
                if not blob.exists():
                    raise CorruptBlob(
                        f"blob {entry.digest} of {manifest.model_id!r} is missing",
                        hint="foundry cache verify",
                    )
                dest = staging.path / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(blob, dest)
                except OSError:
                    shutil.copy2(blob, dest)
            kill_point("store.snapshot")
            try:
                staging.path.replace(target)
            except OSError:
                if not target.exists():  # another process won the race: fine
                    raise
            staging.path.mkdir(exist_ok=True)  # so staging() cleanup has something to remove
        return target

    # --- removal and maintenance (reverse order: ref -> manifest -> blobs) ----------
    def remove(self, model_id: str) -> CachedModel:
        """Drop a ref (and build keys only it used); blobs stay until `gc` finds nothing reaches them."""
        cached = self.resolve(model_id)
        self.layout.ref(model_id).unlink(missing_ok=True)
        if not any(m.manifest_digest == cached.manifest_digest for m in self.list_models()):
            for entry in self.layout.builds.iterdir():  # a build key may not revive a removed model
                with suppress(OSError):
                    if entry.read_text().strip() == cached.manifest_digest:
                        entry.unlink()
        return cached

    def verify(self) -> list[str]:
        """Re-hash every blob; return one line per problem (empty when whole)."""
        from runtime.store.maintenance import verify

        return verify(self)

    def gc(self, *, dry_run: bool = False, progress: ProgressFn = silent) -> dict[str, int]:
        """Free what no ref or build key reaches, once no registration is in flight (it waits,
        reporting the wait through `progress`)."""
        from runtime.store.maintenance import gc

        def report_wait() -> None:
            progress(ProgressEvent("gc", "waiting for a registration in progress to finish"))

        with _flock(self.layout.lock("registration"), exclusive=True, on_wait=report_wait):
            return gc(self, dry_run=dry_run)

    def blob_path(self, digest: str) -> Path:
        return self.layout.blob(digest)

    def hash_file(self, path: Path) -> tuple[str, int]:
        return hash_file(path)
