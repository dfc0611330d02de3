"""What an artifact folder may contain before any engine (onnxruntime, -genai) opens it.

A model folder is untrusted input, whether it comes from `foundry cache import`, a hub
download or the store itself (a blob can be swapped on disk). onnxruntime-genai obeys
`genai_config.json`: `session_options.custom_ops_library` makes it `dlopen` a shared library,
`enable_profiling` writes files, provider options name libraries to load, and every
`filename` (like every ONNX external-data `location`) is opened as given. So before
anything reaches an engine, `check_artifact` holds the folder to an allow-list:

- genai_config.json: `session_options` keys from `SESSION_OPTIONS` only, `config_entries`
  from `CONFIG_ENTRIES` only, provider options that name no path or library, and every
  value of a file-like key (`filename`, `*_file`, `*path*`) a plain relative name inside the
  folder (no leading `/`, no `..`, no symlink out);
- inference_model.json: `Name` and `PromptTemplate` (strings) only;
- tokenizer and config files: regular files no larger than `MAX_SIDE_FILE_BYTES`;
- every `.onnx` file: external-data locations plain relative names of regular files in the
  folder, with offset + length inside the file;
- no symlink anywhere in the folder that resolves outside it.

One validator for imports, download validation and every store load (`runtime/manager.py`).
Never imports onnxruntime or onnxruntime-genai: the point is to run before them.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from runtime.errors import UnsafeArtifact
from runtime.onnx_scan import MalformedOnnx, external_refs

__all__ = [
    "CONFIG_ENTRIES",
    "MAX_SIDE_FILE_BYTES",
    "SESSION_OPTIONS",
    "SIDE_FILES",
    "check_artifact",
    "check_hard_links",
    "check_relative_name",
]

# onnxruntime-genai 0.18 session options that only tune threads, memory and logging.
SESSION_OPTIONS = frozenset(
    {
        "log_id",
        "log_severity_level",
        "log_verbosity_level",
        "intra_op_num_threads",
        "inter_op_num_threads",
        "enable_cpu_mem_arena",
        "enable_mem_pattern",
        "disable_cpu_ep_fallback",
        "disable_quant_qdq",
        "enable_quant_qdq_cleanup",
        "graph_optimization_level",
        "use_env_allocators",
        "provider_options",
        "config_entries",
    }
)
# onnxruntime session config keys (onnxruntime_session_options_config_keys.h) that neither
# load code nor read or write files.
CONFIG_ENTRIES = frozenset(
    {
        "session.intra_op.allow_spinning",
        "session.inter_op.allow_spinning",
        "session.disable_prepacking",
        "session.set_denormal_as_zero",
        "session.use_env_allocators",
        "session.dynamic_block_base",
        "session.disable_cpu_ep_fallback",
        "session.disable_quant_qdq",
        "session.enable_quant_qdq_cleanup",
        "session.disable_double_qdq_remover",
        "session.qdq_matmulnbits_accuracy_level",
        "session.disable_aot_function_inlining",
        "session.x64quantprecision",
        "session.intra_op_thread_affinities",
        "mlas.enable_gemm_fastmath_arm64_bfloat16",
    }
)
PROVIDERS = frozenset({"cpu", "cuda", "dml", "qnn", "webgpu", "WebGPU", "rocm", "openvino"})
# QNN names its backend as a library file; these are the ones the QNN SDK itself ships.
QNN_BACKENDS = frozenset({"QnnHtp.dll", "QnnCpu.dll", "libQnnHtp.so", "libQnnCpu.so"})
_PATH_WORDS = ("file", "path", "dir", "library", "dll")
MAX_CONFIG_BYTES = 1 << 20  # genai_config.json, inference_model.json: a few KB in practice
MAX_SIDE_FILE_BYTES = 128 << 20  # the largest real tokenizer.json (Gemma 3) is ~33 MB
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "audio_processor_config.json",
    "build.json",
)
MAX_FILES = 10_000


def check_artifact(folder: Path) -> None:
    """Refuse a folder that could make an engine load code or read outside it.

    Raises:
        UnsafeArtifact: what is wrong, naming the file and the key.
    """
    root = Path(os.path.realpath(folder))
    if not root.is_dir():
        raise UnsafeArtifact(f"{folder} is not a folder")
    _check_links(root)
    for name in SIDE_FILES:
        _check_side_file(root, name)
    if (root / "genai_config.json").exists():
        _check_genai_config(root, _read_json(root, "genai_config.json"))
    if (root / "inference_model.json").exists():
        _check_inference_model(_read_json(root, "inference_model.json"))
    for graph in sorted(root.rglob("*.onnx")):
        _check_external_data(root, graph)


def check_relative_name(root: Path, name: object, what: str) -> Path:
    """`root / name` if `name` is a plain relative path that stays inside `root`.

    Raises:
        UnsafeArtifact: absolute, `..`, backslash, NUL, or a path that resolves outside.
    """
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise UnsafeArtifact(f"{what}: {name!r} is not a plain relative file name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
        raise UnsafeArtifact(f"{what}: {name!r} must be a relative name inside the model folder")
    path = root / pure
    if not _inside(root, Path(os.path.realpath(path))):
        raise UnsafeArtifact(f"{what}: {name!r} resolves outside the model folder")
    return path


def check_hard_links(folder: Path) -> None:
    """Refuse a file hard-linked from outside `folder` (`foundry cache import` copies what it
    finds, and a CI job may upload a whole cache folder): a link's other names are invisible,
    but their count is not, so every link of an inode must be inside the folder. Not for store
    snapshots, whose files are hard links to blobs by design.

    Raises:
        UnsafeArtifact: naming the file.
    """
    root = Path(os.path.realpath(folder))
    links: dict[tuple[int, int], list[Path]] = {}
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                links.setdefault((info.st_dev, info.st_ino), []).append(path)
    for paths in links.values():
        if len(paths) < paths[0].lstat().st_nlink:
            raise UnsafeArtifact(
                f"{paths[0].relative_to(root)} is a hard link to a file outside the model folder",
                hint="copy the file into the folder instead of linking to it",
            )


# --- the folder ---------------------------------------------------------------------------
def _inside(root: Path, path: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _check_links(root: Path) -> None:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            count += 1
            if count > MAX_FILES:
                raise UnsafeArtifact(f"{root.name} holds more than {MAX_FILES} files")
            path = Path(dirpath) / name
            if path.is_symlink() and not _inside(root, Path(os.path.realpath(path))):
                rel = path.relative_to(root)
                raise UnsafeArtifact(
                    f"{rel} is a symlink to {str(path.readlink())!r}, outside the model folder",
                    hint="copy the file into the folder instead of linking to it",
                )


def _check_side_file(root: Path, name: str) -> None:
    path = root / name
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise UnsafeArtifact(f"{name} is not a regular file")
    size = path.stat().st_size
    if size > MAX_SIDE_FILE_BYTES:
        raise UnsafeArtifact(
            f"{name} is {size:,} bytes; at most {MAX_SIDE_FILE_BYTES:,} are accepted"
        )


def _read_json(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    if not path.is_file():
        raise UnsafeArtifact(f"{name} is not a regular file")
    if (size := path.stat().st_size) > MAX_CONFIG_BYTES:
        raise UnsafeArtifact(f"{name} is {size:,} bytes; at most {MAX_CONFIG_BYTES:,} are accepted")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise UnsafeArtifact(f"{name} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise UnsafeArtifact(f"{name} must hold a JSON object")
    return data


# --- genai_config.json ------------------------------------------------------------------
def _check_genai_config(root: Path, config: dict[str, Any]) -> None:
    def visit(node: Any, where: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                visit(item, f"{where}[{index}]")
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            at = f"{where}.{key}"
            if key == "session_options":
                _check_session_options(value, at)
            elif key == "run_options":
                _check_string_map(value, at)
            elif any(word in key.lower() for word in _PATH_WORDS) and isinstance(value, str):
                check_relative_name(root, value, f"genai_config.json {at}")
            elif key == "enable_profiling":
                raise UnsafeArtifact(f"genai_config.json {at}: profiling writes files; remove it")
            visit(value, at)

    visit(config, "$")


def _check_session_options(options: Any, where: str) -> None:
    if not isinstance(options, dict):
        raise UnsafeArtifact(f"genai_config.json {where} must be an object")
    for key, value in options.items():
        if key not in SESSION_OPTIONS:
            raise UnsafeArtifact(
                f"genai_config.json {where}.{key} is not allowed "
                f"(it can load code or touch files); allowed: {', '.join(sorted(SESSION_OPTIONS))}",
                hint="remove the key from genai_config.json",
            )
        if key == "config_entries":
            _check_string_map(value, f"{where}.{key}", allowed=CONFIG_ENTRIES)
        elif key == "provider_options":
            _check_provider_options(value, f"{where}.{key}")


def _check_string_map(value: Any, where: str, allowed: frozenset[str] | None = None) -> None:
    if not isinstance(value, dict):
        raise UnsafeArtifact(f"genai_config.json {where} must be an object")
    for key, entry in value.items():
        if allowed is not None and key not in allowed:
            raise UnsafeArtifact(
                f"genai_config.json {where}: entry {key!r} is not on the allow-list",
                hint="remove it from genai_config.json",
            )
        if not isinstance(entry, str | int | float | bool) or _names_a_path(key):
            raise UnsafeArtifact(f"genai_config.json {where}.{key} is not allowed")


def _check_provider_options(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise UnsafeArtifact(f"genai_config.json {where} must be a list")
    for entry in value:
        if not isinstance(entry, dict):
            raise UnsafeArtifact(f"genai_config.json {where} entries must be objects")
        for provider, options in entry.items():
            if provider not in PROVIDERS:
                raise UnsafeArtifact(f"genai_config.json {where}: unknown provider {provider!r}")
            if not isinstance(options, dict):
                raise UnsafeArtifact(f"genai_config.json {where}.{provider} must be an object")
            for key, option in options.items():
                if key == "backend_path" and provider == "qnn" and option in QNN_BACKENDS:
                    continue
                if _names_a_path(key) or not isinstance(option, str | int | float | bool):
                    raise UnsafeArtifact(
                        f"genai_config.json {where}.{provider}.{key} names a file or library; "
                        "provider options may only tune the provider"
                    )


def _names_a_path(key: str) -> bool:
    return any(word in key.lower() for word in _PATH_WORDS)


# --- inference_model.json ---------------------------------------------------------------
def _check_inference_model(data: dict[str, Any]) -> None:
    unknown = set(data) - {"Name", "PromptTemplate"}
    if unknown:
        raise UnsafeArtifact(
            f"inference_model.json: unknown keys {sorted(unknown)}; expected Name, PromptTemplate"
        )
    template = data.get("PromptTemplate", {})
    if not isinstance(data.get("Name", ""), str) or not isinstance(template, dict):
        raise UnsafeArtifact(
            "inference_model.json: Name must be a string, PromptTemplate an object"
        )
    if not all(isinstance(v, str) for v in template.values()):
        raise UnsafeArtifact("inference_model.json: every PromptTemplate entry must be a string")


# --- ONNX external data -----------------------------------------------------------------
def _check_external_data(root: Path, graph: Path) -> None:
    rel = graph.relative_to(root).as_posix()
    try:
        refs = external_refs(graph)
    except MalformedOnnx as exc:
        raise UnsafeArtifact(f"{rel} is not a well-formed ONNX file: {exc}") from None
    sizes: dict[str, int] = {}
    for ref in refs:
        what = f"{rel} tensor {ref.tensor!r} external data"
        path = check_relative_name(graph.parent, ref.location, what)
        if not _inside(root, Path(os.path.realpath(path))):
            raise UnsafeArtifact(f"{what}: {ref.location!r} resolves outside the model folder")
        if ref.location not in sizes:
            if not path.is_file():
                raise UnsafeArtifact(f"{what}: {ref.location!r} is not a file in the model folder")
            sizes[ref.location] = path.stat().st_size
        size = sizes[ref.location]
        end = ref.offset + (ref.length or 0)
        if ref.offset < 0 or (ref.length is not None and ref.length < 0) or end > size:
            raise UnsafeArtifact(
                f"{what}: offset {ref.offset} + length {ref.length or 0} is past the end of "
                f"{ref.location!r} ({size:,} bytes)"
            )
