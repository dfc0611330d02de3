"""Where a build starts: a Hugging Face id[@revision], a local folder, a GGUF file, or a synthetic checkpoint.

`resolve_source` turns what the user typed into a `Source`: a folder on disk with a
readable `config.json` and intact safetensors, and a digest (the hub commit, or the sha256
over the folder's files) that the build key hashes. A GGUF file (local, or one file of a hub
repo named by `gguf_file`) resolves to a `Source` whose digest is the file's sha256 and whose
config comes from its metadata; `dequantized` turns it into a checkpoint folder (compiler.gguf)
only when something must be built. It never writes to the store; a synthetic or dequantized
checkpoint is written into a folder the caller owns (a store staging folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import Offline, SourceError
from runtime.progress import ProgressEvent, ProgressFn, silent
from runtime.settings import env

if TYPE_CHECKING:
    from compiler.gguf import GgufFile

__all__ = [
    "Source",
    "dequantized",
    "file_digest",
    "folder_digest",
    "load_folder",
    "load_gguf",
    "resolve_hub",
    "resolve_source",
    "synthetic",
]

log = logging.getLogger(__name__)

DEFAULT_ALLOW = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
# Never fetched: Mistral's repos hold their weights twice, as transformers' shards and as
# mistral-inference's consolidated.safetensors (14.5 GB for Mistral-7B-Instruct-v0.3).
DEFAULT_IGNORE = ["consolidated.safetensors", "consolidated.*.safetensors"]


@dataclass(frozen=True)
class Source:
    """A checkpoint folder and what identifies it."""

    path: Path
    name: str  # what the user typed, shortened to a model-id stem (folder name, repo name, alias)
    origin: str  # "hf:<id>@<rev>", "folder:<abs path>", "synthetic:<alias>"
    digest: str
    config: dict[str, Any] = field(hash=False, compare=False)
    revision: str | None = None
    synthetic: bool = False
    alias: str | None = None
    # Set while `path` is still the GGUF file (before `dequantized`) and kept after it.
    gguf: GgufFile | None = field(default=None, hash=False, compare=False)

    @property
    def needs_dequantizing(self) -> bool:
        return self.gguf is not None and self.path.is_file()


def resolve_source(
    model: str,
    progress: ProgressFn = silent,
    *,
    allow_patterns: list[str] | None = None,
    gguf_file: str | None = None,
) -> Source:
    """A local folder or GGUF file when `model` names one (or looks like a path), else a hub id.

    `gguf_file` picks one GGUF file of a hub repo (or of a local folder holding several).

    Raises:
        SourceError: missing folder, no config.json, unreadable config, safetensors or GGUF.
        Offline: the hub cannot be reached; the hint says how to pass a local folder.
    """
    path = Path(model).expanduser()
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if gguf_file is not None:
            return load_gguf(path / gguf_file, progress)
        if path.is_file():
            return load_gguf(path, progress)
        return load_folder(path, progress)
    if gguf_file is not None:
        return resolve_hub_gguf(model, gguf_file, progress)
    return resolve_hub(model, progress, allow_patterns=allow_patterns or DEFAULT_ALLOW)


def load_gguf(path: Path, progress: ProgressFn = silent, *, origin: str | None = None) -> Source:
    """A GGUF file as a source: digest = its sha256, config from its metadata (not dequantized).

    Raises:
        SourceError: missing or not a GGUF file, or an unsupported architecture.
    """
    from compiler.gguf import gguf_config, is_gguf, read_gguf

    if not path.is_file():
        raise SourceError(
            f"file '{path}' does not exist",
            hint="pass a GGUF file, a checkpoint folder (with config.json) or a Hugging Face id",
        )
    if not is_gguf(path):
        raise SourceError(
            f"'{path}' is neither a checkpoint folder nor a GGUF file",
            hint="pass the folder that holds config.json and *.safetensors, or a .gguf file",
        )
    info = read_gguf(path)
    progress(ProgressEvent("source", f"hashing {path.name} ({info.quantization})"))
    resolved = path.resolve()
    return Source(
        path=resolved,
        name=resolved.stem,
        origin=origin or f"gguf:{resolved}",
        digest=file_digest(resolved),
        config=gguf_config(info),
        gguf=info,
    )


def dequantized(source: Source, dest: Path, progress: ProgressFn = silent) -> Source:
    """The GGUF source as an fp32 checkpoint folder in `dest`: same name, origin and digest."""
    from compiler.gguf import dequantize

    if source.gguf is None:
        return source
    folder = dequantize(source.gguf, dest, progress)
    check_safetensors(folder)
    return dataclasses.replace(source, path=folder, config=read_config(folder))


def load_folder(path: Path, progress: ProgressFn = silent, *, name: str | None = None) -> Source:
    """Check a checkpoint folder and hash it (the digest is the folder's identity)."""
    if not path.is_dir():
        raise SourceError(
            f"folder '{path}' does not exist",
            hint="pass a checkpoint folder (with config.json) or a Hugging Face id "
            "like Qwen/Qwen2.5-0.5B-Instruct",
        )
    config = read_config(path)
    check_safetensors(path)
    progress(ProgressEvent("source", f"hashing {path}"))
    digest = folder_digest(path)
    resolved = path.resolve()
    return Source(
        path=resolved,
        name=name or resolved.name,
        origin=f"folder:{resolved}",
        digest=digest,
        config=config,
    )


def read_config(path: Path) -> dict[str, Any]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise SourceError(
            f"folder '{path}' has no config.json",
            hint="pass the folder that holds the checkpoint's config.json and *.safetensors",
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"'{config_path}' is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise SourceError(f"'{config_path}' is not a JSON object")
    return config


def check_safetensors(path: Path) -> None:
    """Read each safetensors header (cheap): a corrupt or truncated file fails here in one line."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise SourceError(
            f"folder '{path}' has no *.safetensors weights",
            hint="save the model with `model.save_pretrained(folder)` (safetensors is the default)",
        )
    from safetensors import safe_open

    for file in files:
        try:
            _check_extent(file)
            with safe_open(str(file), framework="numpy") as handle:
                list(handle.keys())
        except Exception as exc:
            raise SourceError(f"'{file}' is not a readable safetensors file: {exc}") from None


def _check_extent(file: Path) -> None:
    """safe_open maps lazily and a truncated file passes it: compare the size with the header."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError("file is shorter than its header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise ValueError("header length exceeds the file")
        header = json.loads(handle.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise ValueError(f"expected {8 + header_len + end} bytes, found {size} (truncated?)")


def folder_digest(path: Path) -> str:
    """sha256 over (relative path, size, file sha256) of every file, in path order.

    File hashes are remembered by (path, size, mtime_ns, inode), as git's index does, so a
    rebuild of an unchanged 2 GB checkpoint does not re-read it (3.8 s -> ~0 on this machine).
    """
    memo = _DigestMemo.open()
    outer = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel.startswith(".cache/") or "/." in f"/{rel}":
            continue  # hub download bookkeeping, editor files
        stat = file.stat()
        outer.update(f"{rel}\0{stat.st_size}\0{memo.file_hex(file, stat)}\n".encode())
    memo.save()
    return f"sha256:{outer.hexdigest()}"


def file_digest(file: Path) -> str:
    """`sha256:<hex>` of one file, remembered by stat signature like `folder_digest`'s files."""
    memo = _DigestMemo.open()
    hex_digest = memo.file_hex(file, file.stat())
    memo.save()
    return f"sha256:{hex_digest}"


class _DigestMemo:
    """`$FOUNDRY_HOME/compiler/file-digests.json`: stat signature -> sha256 of large files."""

    MIN_SIZE = 16 << 20  # small files are cheaper to hash than to look up

    def __init__(self, path: Path, entries: dict[str, str]):
        self.path = path
        self.entries = entries
        self.changed = False

    @classmethod
    def open(cls) -> _DigestMemo:
        from runtime.settings import foundry_home

        path = foundry_home() / "compiler" / "file-digests.json"
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def file_hex(self, file: Path, stat: os.stat_result) -> str:
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
        if stat.st_size >= self.MIN_SIZE and key in self.entries:
            return self.entries[key]
        inner = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                inner.update(chunk)
        if stat.st_size >= self.MIN_SIZE:
            self.entries[key] = inner.hexdigest()
            self.changed = True
        return inner.hexdigest()

    def save(self) -> None:
        """Best effort (a lost update only costs a re-hash); written atomically via rename."""
        if not self.changed:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(dict(list(self.entries.items())[-4096:])))
            tmp.replace(self.path)


def resolve_hub(model: str, progress: ProgressFn = silent, *, allow_patterns: list[str]) -> Source:
    """Download only what the recipe needs (huggingface_hub honours HF_ENDPOINT)."""
    repo_id, folder, commit = _download(model, progress, allow_patterns)
    source = load_folder(folder, progress, name=repo_id.split("/")[1])
    return Source(
        path=source.path,
        name=source.name,
        origin=f"hf:{repo_id}@{commit}",
        digest=f"hf:{repo_id}@{commit}:{source.digest}",
        config=source.config,
        revision=commit,
    )


def resolve_hub_gguf(model: str, gguf_file: str, progress: ProgressFn = silent) -> Source:
    """One GGUF file of a hub repo; its digest is the file's sha256, wherever it came from."""
    if not gguf_file or Path(gguf_file).is_absolute() or ".." in Path(gguf_file).parts:
        raise SourceError(f"--gguf-file {gguf_file!r} is not a file name in the repository")
    repo_id, folder, commit = _download(model, progress, [gguf_file])
    path = folder / gguf_file
    if not path.is_file():
        raise SourceError(
            f"Hugging Face repository '{repo_id}' has no file '{gguf_file}'",
            hint="pass one of the repository's .gguf file names with --gguf-file",
        )
    source = load_gguf(path, progress, origin=f"hf:{repo_id}@{commit}/{gguf_file}")
    return dataclasses.replace(source, revision=commit)


def _download(model: str, progress: ProgressFn, allow_patterns: list[str]) -> tuple[str, Path, str]:
    """(repo id, snapshot folder, commit) of the files matching `allow_patterns`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = model.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise SourceError(
            f"'{model}' is neither a folder nor a Hugging Face id (owner/name[@revision])",
            hint=f"foundry-build {model} --synthetic  # offline: its architecture, random weights"
            if _is_synthetic_alias(model)
            else "pass a local checkpoint folder, e.g. ./my-finetune",
        )
    progress(ProgressEvent("download", f"{repo_id}@{revision or 'main'}"))
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                allow_patterns=allow_patterns,
                ignore_patterns=DEFAULT_IGNORE,
            )
        )
    except GatedRepoError:
        raise SourceError(
            f"Hugging Face repository '{repo_id}' is gated",
            hint=f"accept its licence at https://huggingface.co/{repo_id}, then set HF_TOKEN",
        ) from None
    except RepositoryNotFoundError as exc:
        raise SourceError(
            f"Hugging Face repository '{repo_id}' is not available: {type(exc).__name__}"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"revision '{revision}' of '{repo_id}' does not exist") from None
    except (LocalEntryNotFoundError, OSError) as exc:
        endpoint = env("HF_ENDPOINT", "https://huggingface.co")
        raise Offline(
            f"cannot reach the Hugging Face hub at {endpoint} to fetch '{model}' (offline?)",
            hint="download the checkpoint elsewhere and pass its folder: "
            "foundry-build ./my-model --target cpu-int4",
        ) from exc
    progress(ProgressEvent("download", repo_id, done=True))
    return repo_id, folder, folder.name  # snapshots/<commit>


def _is_synthetic_alias(name: str) -> bool:
    try:
        from compiler.synthetic import SYNTHETIC_FAMILIES
    except ImportError:
        return False
    return name in SYNTHETIC_FAMILIES


def synthetic(
    alias: str,
    dest: Path,
    progress: ProgressFn = silent,
    *,
    layers: int | None = None,
    hidden: int | None = None,
) -> Source:
    """The alias's real architecture with seeded random weights (compiler.synthetic) in `dest`."""
    try:
        from compiler.synthetic import synthetic_source
    except ImportError as exc:
        raise SourceError(f"synthetic checkpoints are not available: {exc}") from None
    progress(ProgressEvent("source", f"writing a synthetic {alias} checkpoint (random weights)"))
    try:
        folder = synthetic_source(alias, dest, layers=layers, hidden=hidden)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise SourceError(f"no synthetic checkpoint for {alias!r}: {exc}") from None
    source = load_folder(Path(folder), progress, name=alias)
    return Source(
        path=source.path,
        name=alias,
        origin=f"synthetic:{alias}",
        digest=source.digest,
        config=source.config,
        synthetic=True,
        alias=alias,
    )
