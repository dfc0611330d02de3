"""Make a built folder loadable and self-describing before it is registered.

Adds what engines and Foundry Local clients read beside the model: tokenizer files with
the chat template inside `tokenizer_config.json`, `special_tokens_map.json`,
`inference_model.json` (Foundry Local's name + prompt template, derived by rendering the
chat template with placeholder contents) and `build.json` (provenance). Never registers.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from compiler.recipe import RecipeFile, Target
    from compiler.source import Source

__all__ = [
    "BuildRecord",
    "context_length",
    "pack",
    "peak_rss_bytes",
    "prompt_template",
    "tool_versions",
]

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)
TOOLS = (
    "onnxruntime-genai",
    "onnxruntime",
    "olive-ai",
    "transformers",
    "torch",
    "onnx",
    "optimum",
    "gguf",  # reads GGUF sources (transformers dequantizes through it)
)
# Placeholders no real template contains; replaced by Foundry Local's `{Content}`.
_SYSTEM, _USER, _ASSISTANT = "\x01SYSTEM\x01", "\x01USER\x01", "\x01ASSISTANT\x01"


class BuildRecord(msgspec.Struct, frozen=True):
    """build.json: how this artifact was made, enough to reproduce or audit it."""

    schema: int
    model_id: str
    source: str
    source_digest: str
    revision: str | None
    synthetic: bool
    recipe: str
    recipe_file: str
    recipe_digest: str
    target_name: str
    target: dict[str, Any]
    build_key: str
    tools: dict[str, str]
    backend: dict[str, Any]
    validation: dict[str, Any]
    seconds: float
    peak_rss_bytes: int
    # A GGUF source was already quantized: {"format": "gguf", "tensor_types": {"Q4_1": 210, …}}.
    source_quantization: dict[str, Any] | None = None


def tool_versions() -> dict[str, str]:
    """Installed versions of the tools whose change changes an artifact (hashed into build keys)."""
    from importlib.metadata import PackageNotFoundError, version

    import compiler

    versions = {"foundry-build": compiler.__version__}
    for name in TOOLS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def peak_rss_bytes() -> int:
    """Peak resident memory of this process or its largest child (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


def copy_tokenizer(source: Path, artifact: Path) -> None:
    """Tokenizer files the builder did not write; the chat template inside tokenizer_config.json."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and not (artifact / name).is_file():
            shutil.copy2(source / name, artifact / name)
    config_path = artifact / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = _chat_template(source) or _chat_template(artifact)
    if template and not config.get("chat_template"):
        config["chat_template"] = template
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if not (artifact / "special_tokens_map.json").is_file():
        keys = ("bos_token", "eos_token", "unk_token", "pad_token")
        special = {key: config[key] for key in keys if isinstance(config.get(key), str | dict)}
        (artifact / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def _chat_template(folder: Path) -> str | None:
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        template = json.loads(config_path.read_text()).get("chat_template")
        if isinstance(template, str) and template:
            return template
    jinja = folder / "chat_template.jinja"
    return jinja.read_text(encoding="utf-8") if jinja.is_file() else None


def prompt_template(folder: Path) -> dict[str, str] | None:
    """Foundry Local's PromptTemplate, by rendering the template around placeholder messages.

    Each part is the difference between two renderings (e.g. system+user minus system), so a
    default system prompt or BOS the template adds lands where it belongs.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: list[dict[str, str]], generation: bool = False) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation
            )
        )

    system = {"role": "system", "content": _SYSTEM}
    user = {"role": "user", "content": _USER}
    assistant = {"role": "assistant", "content": _ASSISTANT}
    try:
        head = render([system])
        prefix = [system]
    except Exception:  # templates that reject a lone system message
        head, prefix = "", []
    with_user = render([*prefix, user])
    with_answer = render([*prefix, user, assistant])
    with_prompt = render([*prefix, user], generation=True)
    if not (
        with_user.startswith(head)
        and with_answer.startswith(with_user)
        and with_prompt.startswith(with_user)
    ):
        log.warning(
            "chat template is not incremental; inference_model.json gets a best-effort template"
        )
    user_part = with_user[len(head) :] if with_user.startswith(head) else with_user
    generation = with_prompt[len(with_user) :]
    parts = {
        "system": head if _SYSTEM in head else "",
        "user": user_part,
        "assistant": with_answer[len(with_user) :],
        "prompt": user_part + generation,
    }
    placeholders = (_SYSTEM, _USER, _ASSISTANT)
    for key, text in parts.items():
        for placeholder in placeholders:
            text = text.replace(placeholder, "{Content}")
        parts[key] = text
    return parts


def pack(
    artifact: Path,
    source: Source,
    recipe: RecipeFile,
    target_name: str,
    target: Target,
    *,
    model_id: str,
    build_key: str,
    backend_facts: dict[str, Any],
    validation: dict[str, Any],
    seconds: float,
) -> BuildRecord:
    """Write tokenizer files, inference_model.json and build.json into `artifact`."""
    copy_tokenizer(source.path, artifact)
    template = prompt_template(artifact)
    inference = {"Name": model_id, "PromptTemplate": template or {}}
    (artifact / "inference_model.json").write_text(
        json.dumps(inference, indent=2, ensure_ascii=False) + "\n"
    )
    record = BuildRecord(
        schema=1,
        model_id=model_id,
        source=source.origin,
        source_digest=source.digest,
        revision=source.revision,
        synthetic=source.synthetic,
        recipe=recipe.recipe.name,
        recipe_file=recipe.path.name,
        recipe_digest=recipe.digest,
        target_name=target_name,
        target=msgspec.to_builtins(target),
        build_key=build_key,
        tools=tool_versions(),
        backend=backend_facts,
        validation=validation,
        seconds=round(seconds, 3),
        peak_rss_bytes=peak_rss_bytes(),
        source_quantization=source.gguf.record() if source.gguf is not None else None,
    )
    (artifact / "build.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(record), indent=2) + b"\n"
    )
    return record


def context_length(artifact: Path, source: Source) -> int:
    """The context the engine will allow: genai_config's, else the checkpoint's."""
    pooling = artifact / "pooling.json"  # embeddings: the encoder's truncation length
    if pooling.is_file():
        return int(json.loads(pooling.read_text()).get("max_length") or 0)
    genai = artifact / "genai_config.json"
    if genai.is_file():
        value = json.loads(genai.read_text()).get("model", {}).get("context_length")
        if isinstance(value, int):
            return value
    return int(source.config.get("max_position_embeddings") or 0)
