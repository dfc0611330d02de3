"""Teacher-forced quality of a chat artifact against its fp32 reference, on real text.

Why teacher-forced: free-running greedy agreement ("N/32 tokens") collapses after the first
divergence and means nothing on random weights. Here both sides read the same text and every
position is compared on its own, as llama.cpp's `llama-perplexity --kl-divergence` does:

- `top1`: how often the artifact's most likely next token is the reference's;
- `kld`: mean KL(P_reference || P_artifact) over the vocabulary, in nats;
- `ppl_ratio`: the artifact's perplexity on the text's actual next tokens ÷ the reference's;
- `tokens`: how many positions were compared; `corpus`: which text (its digest).

Protocol: the corpus (`compiler/corpus/*.txt`: prose and code, licences in its README) is
tokenized per document without special tokens and cut into windows of `WINDOW` tokens, each a
fresh context; within a window every position but the last predicts the next token.

Memory (a 7B model on a 24 GB machine): the corpus is streamed window by window; per window
each side's logits are [WINDOW x vocab] and are reduced to per-position sums in slices of
`ROWS` rows, so nothing the size of [corpus tokens x vocab] is ever held in memory. The
reference runs first, alone (its per-window logits go to disk, `cached_reference`), then the
artifact: the two models are never resident together. The reference runs in float32 when its
weights fit in a third of the available memory, else in bfloat16 (a 7B: 28 GB in float32), and
the record says which.

Full logits from a pruned artifact: today's CPU targets use `prune_lm_head: true` (a
Gather(-1) + Unsqueeze before the lm_head MatMul, so prefill yields the last position only).
The cheapest correct way to get every position is not a second build nor one decode step per
token (the corpus at decode speed is ~60 s for 135M, ~10 min for 7B) but the same graph with
that Gather bypassed: the lm_head weights, the quantized MatMuls and every other node are the
artifact's own, so each position's logits are exactly what the served artifact would produce at
that position. `full_logits_model` writes that graph (the ONNX proto without its weights, a few
MB) into a scratch folder beside a link to the artifact's weight file; onnxruntime then runs a
plain prefill per window. Heavy imports (numpy, torch, onnx, onnxruntime) stay inside functions.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CORPUS_DIR",
    "Quality",
    "compare",
    "corpus_digest",
    "corpus_windows",
    "full_logits_model",
    "measure",
    "onnx_logits",
    "transformers_logits",
]

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
WINDOW = 1024
ROWS = 256  # rows of [WINDOW x vocab] reduced at once: bounds the float temporaries

# A function from one window's token ids to its logits, [len(ids), vocab] float32.
LogitsFn = Callable[[list[int]], "np.ndarray"]


@dataclass(frozen=True)
class Quality:
    """The figures build.json records under `validation.quality`."""

    top1: float
    kld: float
    ppl_ratio: float
    tokens: int
    corpus: str
    ppl_reference: float
    ppl_artifact: float
    window: int
    vocab: int = 0
    reference: str = ""

    @property
    def trained(self) -> bool:
        """Whether the reference has learned the text at all: its perplexity is far below a guess
        over the vocabulary (random weights score about the vocabulary size or worse; SmolLM2-135M
        scores 15 over 49,152). Otherwise its figures say nothing and floors do not apply."""
        return self.ppl_reference < math.sqrt(max(self.vocab, 1))

    def record(self) -> dict[str, Any]:
        rounded = {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return rounded


def corpus_files(folder: Path = CORPUS_DIR) -> list[Path]:
    return sorted(folder.glob("*.txt"))


def corpus_digest(folder: Path = CORPUS_DIR, label: str = "corpus") -> str:
    """`<label>@sha256:<12 hex>` over the folder's documents in name order (names and bytes)."""
    digest = hashlib.sha256()
    for path in corpus_files(folder):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{label}@sha256:{digest.hexdigest()[:12]}"


def corpus_windows(
    tokenizer: Any, window: int = WINDOW, folder: Path = CORPUS_DIR
) -> list[list[int]]:
    """The folder's documents as windows of at most `window` token ids (a last window shorter
    than 2 is dropped)."""
    windows: list[list[int]] = []
    for path in corpus_files(folder):
        ids = list(
            tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        )
        windows += [ids[i : i + window] for i in range(0, len(ids), window)]
    return [w for w in windows if len(w) >= 2]


class _Totals:
    """Running sums over every compared position (no per-position storage)."""

    def __init__(self) -> None:
        self.tokens = 0
        self.same_top1 = 0
        self.kld = 0.0
        self.nll_reference = 0.0
        self.nll_artifact = 0.0

    def add(self, reference: Any, artifact: Any, targets: Any) -> None:
        """One slice of rows: logits [rows, vocab] on each side and the true next tokens [rows]."""
        import torch

        ref = torch.log_softmax(torch.as_tensor(reference, dtype=torch.float32), dim=-1)
        art = torch.log_softmax(torch.as_tensor(artifact, dtype=torch.float32), dim=-1)
        index = torch.as_tensor(targets, dtype=torch.long).unsqueeze(-1)
        self.tokens += int(ref.shape[0])
        self.same_top1 += int((ref.argmax(-1) == art.argmax(-1)).sum())
        self.kld += float((ref.exp() * (ref - art)).sum())
        self.nll_reference -= float(ref.gather(-1, index).sum())
        self.nll_artifact -= float(art.gather(-1, index).sum())


def compare(
    windows: list[list[int]],
    reference: LogitsFn,
    artifact: LogitsFn,
    *,
    corpus: str = "",
    reference_name: str = "",
) -> Quality:
    """Top-1 agreement, mean KL divergence and perplexity ratio over `windows`, streamed."""
    totals = _Totals()
    window = max((len(w) for w in windows), default=0)
    vocab = 0
    for ids in windows:
        ref_logits, art_logits = reference(ids), artifact(ids)
        vocab = int(ref_logits.shape[-1])
        for start in range(0, len(ids) - 1, ROWS):
            stop = min(start + ROWS, len(ids) - 1)
            totals.add(ref_logits[start:stop], art_logits[start:stop], ids[start + 1 : stop + 1])
        del ref_logits, art_logits
    if totals.tokens == 0:
        raise ValueError("no positions to compare: the corpus is empty")
    ppl_ref = math.exp(totals.nll_reference / totals.tokens)
    ppl_art = math.exp(totals.nll_artifact / totals.tokens)
    return Quality(
        top1=totals.same_top1 / totals.tokens,
        kld=max(totals.kld / totals.tokens, 0.0),
        ppl_ratio=ppl_art / ppl_ref,
        tokens=totals.tokens,
        corpus=corpus,
        ppl_reference=ppl_ref,
        ppl_artifact=ppl_art,
        window=window,
        vocab=vocab,
        reference=reference_name,
    )


def measure(artifact: Path, source: Path, scratch: Path, *, window: int = WINDOW) -> Quality:
    """The artifact's quality against the transformers checkpoint at `source` (the fp32 reference).

    `scratch` receives the full-logits graph (removed by the caller with its staging folder).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    windows = corpus_windows(tokenizer, window)
    model = full_logits_model(artifact, scratch)
    reference, name = cached_reference(source, windows)
    with onnx_logits(model, artifact) as candidate:
        return compare(windows, reference, candidate, corpus=corpus_digest(), reference_name=name)


_REFERENCES: dict[tuple[str, ...], tuple[Path, str]] = {}


def cached_reference(source: Path, windows: list[list[int]]) -> tuple[LogitsFn, str]:
    """The reference's logits per window, computed once per process and source.

    Building several targets of one source (`--target cpu-int4 --target cpu-int8`, a test
    session) then pays for the transformers pass once. The windows' logits go to .npy files
    in a temporary folder removed at exit ([corpus tokens x vocab] float32 on disk, ~0.8 GB
    for a 49k vocabulary; read back one window at a time, never all in memory).
    """
    import numpy as np

    weights = sorted(source.glob("*.safetensors"))
    key = (
        str(source.resolve()),
        *(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights),
        corpus_digest(),
        str(len(windows)),
        str(max(len(w) for w in windows)),
    )
    if key not in _REFERENCES:
        folder = Path(tempfile.mkdtemp(prefix="foundry-quality-reference-"))
        atexit.register(shutil.rmtree, folder, True)
        with transformers_logits(source) as (logits, name):
            for index, ids in enumerate(windows):
                np.save(folder / f"{index}.npy", logits(ids))
        _REFERENCES[key] = (folder, name)
    folder, name = _REFERENCES[key]
    files = {tuple(ids): folder / f"{i}.npy" for i, ids in enumerate(windows)}

    def reference(ids: list[int]) -> np.ndarray:
        return np.load(files[tuple(ids)])

    return reference, name


def transformers_logits(source: Path) -> Any:
    """Context manager: (logits function, "transformers float32|bfloat16") for the checkpoint."""
    import contextlib

    @contextlib.contextmanager
    def opened() -> Iterator[tuple[LogitsFn, str]]:
        import torch

        from compiler.validate import model_class

        dtype = reference_dtype(source)
        model = model_class("chat").from_pretrained(str(source), dtype=dtype)
        model.eval()

        def logits(ids: list[int]) -> np.ndarray:
            with torch.no_grad():
                out = model(torch.tensor([ids], dtype=torch.long)).logits[0]
            return out.float().numpy()

        yield logits, f"transformers {str(dtype).removeprefix('torch.')}"

    return opened()


def reference_dtype(source: Path) -> Any:
    """float32 when 4 bytes per weight fit in a third of the available memory, else bfloat16."""
    import torch

    weights = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    config = _read_json(source / "config.json")
    stored = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    fp32_bytes = weights * (1 if "32" in stored else 2)
    return torch.float32 if fp32_bytes < _available_memory() / 3 else torch.bfloat16


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def onnx_logits(model: Path, artifact: Path) -> Any:
    """Context manager: a logits function over one onnxruntime prefill of a decoder ONNX model.

    The graph is the onnxruntime-genai builder's: input_ids, attention_mask, empty past
    key/values (sequence length 0; heads and head size from the artifact's genai_config.json)
    in, `logits` [1, S, vocab] out.
    """
    import contextlib

    @contextlib.contextmanager
    def opened() -> Iterator[LogitsFn]:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        decoder = _read_json(artifact / "genai_config.json").get("model", {}).get("decoder", {})
        kv_shape = (int(decoder.get("num_key_value_heads", 0)), int(decoder.get("head_size", 0)))

        def logits(ids: list[int]) -> np.ndarray:
            feed = {item.name: _input_value(item, ids, kv_shape) for item in inputs}
            (out,) = session.run(["logits"], feed)
            if out.shape[1] != len(ids):  # a pruned graph whose prune full_logits_model missed
                raise ValueError(
                    f"the artifact returned logits for {out.shape[1]} of {len(ids)} positions"
                )
            return np.asarray(out[0], dtype=np.float32)

        yield logits

    return opened()


def _input_value(item: Any, ids: list[int], kv_shape: tuple[int, int]) -> Any:
    import numpy as np

    length = len(ids)
    if item.name == "input_ids":
        return np.asarray([ids], dtype=np.int64)
    if item.name == "attention_mask":
        return np.ones((1, length), dtype=np.int64)
    if item.name == "position_ids":
        return np.arange(length, dtype=np.int64)[None, :]
    if item.name.startswith("past_key_values."):
        heads, head_size = (
            d if isinstance(d, int) else kv
            for d, kv in zip(item.shape[1::2], kv_shape, strict=True)
        )
        dtype = np.float16 if "float16" in item.type else np.float32
        return np.zeros((1, heads, 0, head_size), dtype=dtype)
    raise ValueError(f"the artifact's graph has an input this check does not know: {item.name}")


def full_logits_model(artifact: Path, scratch: Path) -> Path:
    """The artifact's model.onnx, or (pruned lm_head) the same graph with the prune bypassed.

    The rewritten proto goes to `scratch/model.onnx`; its weights stay the artifact's, linked
    (hard-linked, or copied across file systems) under the same relative name the proto refers to.
    """
    import onnx

    source = artifact / "model.onnx"
    proto = onnx.load(str(source), load_external_data=False)
    if not _bypass_prune(proto.graph):
        return source
    scratch.mkdir(parents=True, exist_ok=True)
    for data in _external_files(proto):
        target = scratch / data
        if not target.exists():
            try:  # onnxruntime refuses external data that resolves outside the model's folder
                os.link(artifact / data, target)
            except OSError:
                shutil.copyfile(artifact / data, target)
    for output in proto.graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].ClearField("dim_value")
            output.type.tensor_type.shape.dim[1].dim_param = "sequence_length"
    onnx.save(proto, str(scratch / "model.onnx"))
    return scratch / "model.onnx"


def _bypass_prune(graph: Any) -> bool:
    """Rewire the lm_head MatMul to read every position (the builder's `/lm_head/prune/*` pair)."""
    producers = {out: node for node in graph.node for out in node.output}
    unsqueeze = next(
        (n for n in graph.node if n.op_type == "Unsqueeze" and "prune" in n.name), None
    )
    if unsqueeze is None:
        return False
    gather = producers.get(unsqueeze.input[0])
    if gather is None or gather.op_type != "Gather":
        return False
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == unsqueeze.output[0]:
                node.input[i] = gather.input[0]
    graph.node.remove(unsqueeze)
    graph.node.remove(gather)
    kept = {o.name for o in graph.output}
    stale = [v for v in graph.value_info if v.name not in kept and _after_prune(v.name)]
    for value in stale:
        graph.value_info.remove(value)
    return True


def _after_prune(name: str) -> bool:
    """value_info entries whose declared [B, 1, ...] shape the bypass makes wrong."""
    return name.startswith("/lm_head/") or "prune" in name


def _external_files(proto: Any) -> set[str]:
    from onnx.external_data_helper import _get_all_tensors

    files = set()
    for tensor in _get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                files.add(entry.value)
    return files
