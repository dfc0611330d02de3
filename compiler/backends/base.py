"""What every backend is: a typed `Options` struct and `run(source, target, out_dir, progress)`.

Also the one place third-party chatter is contained: builders print to stdout and draw
tqdm bars; `captured_output` sends them to a log file (so `--json` stays clean) and turns
the builder's "Reading layer N" lines into progress events.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import msgspec

from runtime.errors import RecipeError
from runtime.progress import ProgressEvent, ProgressFn

if TYPE_CHECKING:
    from compiler.recipe import Target
    from compiler.source import Source

__all__ = ["Backend", "BuilderOptions", "captured_output", "convert_options"]


class Backend(Protocol):
    name: ClassVar[str]

    def run(
        self, source: Source, target: Target, out_dir: Path, progress: ProgressFn
    ) -> dict[str, Any]:
        """Write the artifact's model files into `out_dir`; return facts for build.json."""
        ...


class BuilderOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """onnxruntime-genai builder options a decoder recipe may set (None: the builder's default)."""

    block_size: int | None = None
    accuracy_level: int | None = None
    is_symmetric: bool | None = None
    # None follows the checkpoint's tie_word_embeddings (the builder refuses to share untied ones).
    shared_embeddings: bool | None = None
    prune_lm_head: bool | None = None
    algo_config: str | None = None
    extra: dict[str, str] = {}  # any other KEY=VALUE the builder's --extra_options accepts

    def to_pairs(self) -> dict[str, str]:
        pairs = {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in msgspec.structs.asdict(self).items()
            if key != "extra" and value is not None
        }
        return {**pairs, **self.extra}


def convert_options(options: dict[str, Any], kind: type[msgspec.Struct], backend: str) -> Any:
    """The recipe's free `options:` as the backend's typed struct; a typo names the field."""
    try:
        return msgspec.convert(options, type=kind)
    except msgspec.ValidationError as exc:
        raise RecipeError(f"options of backend {backend!r}: {exc}") from None


_LAYER = re.compile(r"Reading layer (\d+)")


class _ProgressLog(io.TextIOBase):
    """A text stream that appends to a log file and reports builder layer progress."""

    def __init__(self, handle: io.TextIOBase, progress: ProgressFn, layers: int):
        self.handle = handle
        self.progress = progress
        self.layers = layers

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.handle.write(text)
        for match in _LAYER.finditer(text):
            done = int(match.group(1)) + 1
            self.progress(
                ProgressEvent("convert", f"layer {done}/{self.layers}", done, self.layers, "layers")
            )
        return len(text)

    def flush(self) -> None:
        self.handle.flush()


@contextlib.contextmanager
def captured_output(log_path: Path, progress: ProgressFn, *, layers: int = 0) -> Iterator[Path]:
    """Send Python-level stdout/stderr and root logging of a third-party call to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as handle:
        stream = _ProgressLog(handle, progress, layers)
        handler = logging.StreamHandler(stream)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield log_path
        finally:
            root.removeHandler(handler)
            sys.stdout.flush()


def log_tail(log_path: Path, lines: int = 1) -> str:
    """The last non-empty line(s) of a backend log, for a one-line error."""
    try:
        text = [
            line.strip()
            for line in log_path.read_text(errors="replace").splitlines()
            if line.strip()
        ]
    except OSError:
        return ""
    return " | ".join(text[-lines:])
