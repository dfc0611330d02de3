"""Backend `whisper`: onnxruntime-genai 0.18's builder for WhisperForConditionalGeneration.

The builder writes `encoder.onnx`, `decoder.onnx` (+ `.data`), `audio_processor_config.json`
(log-mel front end run by onnxruntime-extensions), `genai_config.json` and the tokenizer.
It needs a real Whisper tokenizer beside the checkpoint: with a missing one it writes a
useless `tokenizer.json` and the runtime cannot build the decoder prompt, so this backend
refuses such a source up front. Olive adds nothing here (no Olive pass drives the builder's
encoder-decoder export), so the builder is called directly, as `genai-builder` does.
Measured on a synthetic whisper-tiny (2 layers, d_model 64): fp32, int8 and int4 all build
in 4-6 s; fp32 greedy tokens equal transformers' `generate`.

Two things the builder does not do: it drops `generation_config.json`, which says whether the
checkpoint is multilingual (an English-only `.en` one must be prompted without language and
task tokens), so it is copied into the artifact; and it loads the checkpoint in the dtype its
config names (transformers 5 loads `dtype="auto"`), so a source that says float16 would be
rounded to fp16 before an fp32 or int8 export. The builder is therefore shown the source
through a view whose config.json says float32 (weights and every other file are links).
The chat builder's known-bug refusals (`genai_builder.refuse_known_bugs`) are not applied:
its whisper path keeps the decoder's embedding (int4 GatherBlockQuantized) and its output
projection as two tables, so the int8 `last_matmul` that breaks a tied chat model builds,
validates and transcribes here (recipes/whisper.yaml).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from compiler.backends.base import captured_output, convert_options, log_tail
from runtime.errors import BackendFailed, RecipeError, SourceError
from runtime.progress import ProgressEvent, ProgressFn

if TYPE_CHECKING:
    from compiler.recipe import Target
    from compiler.source import Source

__all__ = ["WHISPER_PROMPT_TOKENS", "WhisperBackend", "WhisperOptions", "check_whisper_tokenizer"]

WHISPER_PROMPT_TOKENS = (
    "<|startoftranscript|>",
    "<|en|>",
    "<|transcribe|>",
    "<|translate|>",
    "<|notimestamps|>",
)


class WhisperOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Builder options a whisper recipe target may set (None: the builder's default)."""

    block_size: int | None = None
    accuracy_level: int | None = None
    # e.g. "last_matmul:int8": the decoder's vocabulary projection in 8 bits inside an int4 build
    matmul_mixed_precision: str | None = None
    extra: dict[str, str] = {}

    def to_pairs(self) -> dict[str, str]:
        named = (
            ("block_size", self.block_size),
            ("accuracy_level", self.accuracy_level),
            ("matmul_mixed_precision", self.matmul_mixed_precision),
        )
        pairs = {key: str(value) for key, value in named if value is not None}
        return {**pairs, **self.extra}


def check_whisper_tokenizer(source: Path) -> None:
    """A Whisper tokenizer (tokenizer.json with the decoder-prompt special tokens) must be present.

    Raises:
        SourceError: no tokenizer.json, or one without Whisper's special tokens.
    """
    path = source / "tokenizer.json"
    if not path.exists():
        raise SourceError(
            f"{source} has no tokenizer.json; the whisper builder needs its Whisper tokenizer",
            hint="copy tokenizer.json, tokenizer_config.json, special_tokens_map.json from the hub",
        )
    try:
        added = {t.get("content") for t in json.loads(path.read_text()).get("added_tokens", [])}
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from exc
    missing = [t for t in WHISPER_PROMPT_TOKENS if t not in added]
    if missing:
        raise SourceError(f"{path} is not a Whisper tokenizer: missing {', '.join(missing)}")


@contextmanager
def fp32_view(source: Path, scratch: Path) -> Iterator[Path]:
    """`source` as the builder should load it: in float32, whatever its config.json says.

    Yields `source` itself when its config already says float32 (or nothing); otherwise the
    folder `scratch`, links to its files beside a rewritten config.json, removed after.
    """
    config = json.loads((source / "config.json").read_text())
    if config.get("dtype", config.get("torch_dtype")) in (None, "float32"):
        yield source
        return
    view = scratch
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    try:
        for item in source.iterdir():
            if item.name != "config.json":
                (view / item.name).symlink_to(item.resolve())
        config.pop("dtype", None)
        config["torch_dtype"] = "float32"
        (view / "config.json").write_text(json.dumps(config, indent=2))
        yield view
    finally:
        shutil.rmtree(view, ignore_errors=True)


def multilingual_source(source: Path) -> bool:
    """What the checkpoint's generation_config says (`is_multilingual`), else its vocabulary."""
    from runtime.engines.speech import ENGLISH_ONLY_VOCAB

    try:
        generation = json.loads((source / "generation_config.json").read_text())
    except (OSError, ValueError):
        generation = {}
    if isinstance(generation.get("is_multilingual"), bool):
        return bool(generation["is_multilingual"])
    config = json.loads((source / "config.json").read_text())
    return config.get("vocab_size") != ENGLISH_ONLY_VOCAB


class WhisperBackend:
    name: ClassVar[str] = "whisper"
    Options = WhisperOptions

    def run(
        self, source: Source, target: Target, out_dir: Path, progress: ProgressFn
    ) -> dict[str, Any]:
        from compiler.backends.genai_builder import run_builder

        if target.passes:
            raise RecipeError("backend 'whisper' runs no Olive passes")
        options = convert_options(target.options, WhisperOptions, self.name)
        check_whisper_tokenizer(source.path)
        progress(
            ProgressEvent(
                "convert",
                f"onnxruntime-genai builder: whisper {target.precision} for {target.provider}",
            )
        )
        log_path = out_dir.parent / f"{out_dir.name}.builder.log"
        layers = int(source.config.get("encoder_layers", 0)) + int(
            source.config.get("decoder_layers", 0)
        )
        scratch = out_dir.parent / f"{out_dir.name}.whisper"
        try:
            with (
                fp32_view(source.path, scratch) as path,
                captured_output(log_path, progress, layers=layers),
            ):
                run_builder(
                    path,
                    out_dir,
                    target.precision,
                    target.provider,
                    options.to_pairs(),
                    refuse_chat_bugs=False,
                )
        except Exception as exc:
            detail = log_tail(log_path) or f"{type(exc).__name__}: {exc}"
            raise BackendFailed(
                f"the onnxruntime-genai builder failed on whisper: {detail}"
            ) from exc
        for name in (
            "encoder.onnx",
            "decoder.onnx",
            "audio_processor_config.json",
            "genai_config.json",
        ):
            if not (out_dir / name).exists():
                raise BackendFailed(f"the whisper builder wrote no {name}")
        if (source.path / "generation_config.json").is_file():
            shutil.copyfile(
                source.path / "generation_config.json", out_dir / "generation_config.json"
            )
        progress(ProgressEvent("convert", "done", done=True))
        return {
            "backend": self.name,
            "builder_options": options.to_pairs(),
            "task": "speech",
            "multilingual": multilingual_source(source.path),
        }
