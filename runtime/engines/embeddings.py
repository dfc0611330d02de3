"""Sentence embeddings with onnxruntime: tokenize, run the encoder, pool, normalise.

The artifact folder holds `model.onnx` (Olive's graph capture), `tokenizer.json` and
`pooling.json` (written by `compiler/backends/olive_encoder.py`). Inputs longer than
`pooling.json`'s `max_length` (all-MiniLM-L6-v2: 256 tokens, as sentence-transformers
does) are truncated, never rejected; usage counts the tokens the model actually saw.
Token-array inputs are fed verbatim (the caller's ids are what the model sees, special
tokens included), truncated the same way.

Concurrent requests are coalesced by `EmbeddingBatcher`: requests arriving within a few
milliseconds share one encoder run of up to `max_batch` inputs, executed on a worker
thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.engines.threads import ort_session_options, resolve_threads
from runtime.errors import InvalidRequest

if TYPE_CHECKING:
    from runtime.store.metadata import ModelMetadata

__all__ = ["EmbeddingBatcher", "EmbeddingEngine", "Embeddings", "pool"]

Inputs = list[str] | list[list[int]]


@dataclass(frozen=True)
class Embeddings:
    """Vectors (one row per input, float32) and the tokens the model saw in total."""

    vectors: np.ndarray
    prompt_tokens: int


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' pooling over token states `hidden` [b, t, d] with `mask` [b, t]."""
    weights = mask[..., None].astype(np.float32)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return np.where(weights > 0, hidden, -1e9).max(axis=1)
    if mode == "lasttoken":
        last = mask.sum(axis=1).astype(np.int64) - 1
        return hidden[np.arange(hidden.shape[0]), last]
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    return summed / (np.sqrt(counts) if mode == "mean_sqrt_len" else counts)


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


class EmbeddingEngine:
    """Loads one embeddings artifact; `embed()` is thread-safe and synchronous."""

    task = "embeddings"

    def __init__(
        self,
        path: Path,
        metadata: ModelMetadata,
        *,
        model_id: str,
        max_batch: int = 32,
        threads: int | None = None,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.metadata = metadata
        self.model_id = model_id
        pooling = json.loads((self.path / "pooling.json").read_text())
        self.mode: str = pooling.get("mode", "mean")
        self.normalize: bool = bool(pooling.get("normalize", True))
        self.max_length: int = int(pooling.get("max_length", 512))
        self.matryoshka: bool = bool(pooling.get("matryoshka", False))
        self._output: str = pooling.get("output", "last_hidden_state")
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.pad_id: int = self._pad_id()
        self.threads = resolve_threads(threads)  # threads.py: per machine, FOUNDRY_THREADS
        options = ort_session_options(self.threads)
        self.session = ort.InferenceSession(
            str(self.path / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.dimension: int = int(
            pooling.get("dimension") or self.session.get_outputs()[0].shape[-1]
        )
        self.context_length = self.max_length
        self.batcher = EmbeddingBatcher(self, max_batch=max_batch)
        self._active = 0

    def _pad_id(self) -> int:
        config_path = self.path / "config.json"
        if config_path.exists():
            pad = json.loads(config_path.read_text()).get("pad_token_id")
            if isinstance(pad, int):
                return pad
        return self.tokenizer.token_to_id("[PAD]") or self.tokenizer.token_to_id("<pad>") or 0

    # --- tokens ------------------------------------------------------------------
    def tokenize(self, inputs: Inputs) -> list[list[int]]:
        """Token ids per input, truncated to `max_length`; strings get the special tokens."""
        if all(isinstance(item, str) for item in inputs):
            return [enc.ids for enc in self.tokenizer.encode_batch(list(inputs))]  # type: ignore[arg-type]
        vocab = self.tokenizer.get_vocab_size()
        rows: list[list[int]] = []
        for item in inputs:
            if isinstance(item, str) or any(not 0 <= int(t) < vocab for t in item):
                raise InvalidRequest(f"token ids must be integers in [0, {vocab})", param="input")
            rows.append([int(t) for t in item][: self.max_length])
        return rows

    # --- compute -------------------------------------------------------------------
    def embed_ids(self, rows: list[list[int]]) -> np.ndarray:
        """Pooled (and normalised, if the model says so) float32 vectors, one per row."""
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if any(not row for row in rows):
            raise InvalidRequest("an input has no tokens", param="input")
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
            mask[index, : len(row)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds = {name: value for name, value in feeds.items() if name in self._inputs}
        hidden = self.session.run([self._output], feeds)[0]
        vectors = pool(hidden, mask, self.mode).astype(np.float32)
        return normalize(vectors) if self.normalize else vectors

    def embed(self, inputs: Inputs) -> list[list[float]]:
        """Synchronous convenience: vectors as lists (what the validator and tests compare)."""
        return self.embed_ids(self.tokenize(inputs)).tolist()

    async def aembed(self, inputs: Inputs) -> Embeddings:
        """Embed through the batcher: concurrent callers share encoder runs, off the event loop."""
        rows = self.tokenize(inputs)
        self._active += 1
        try:
            vectors = await self.batcher.submit(rows)
        finally:
            self._active -= 1
        return Embeddings(vectors, sum(len(row) for row in rows))

    def active_requests(self) -> int:
        """Requests in flight (the model manager never evicts a model that has some)."""
        return self._active

    def truncate_dimensions(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
        """OpenAI's `dimensions`: only for Matryoshka-trained models (truncate + renormalise).

        Raises:
            InvalidRequest: not trained for shorter vectors, or the size is out of range.
        """
        if dimensions is None or dimensions == self.dimension:
            return vectors
        if not self.matryoshka:
            raise InvalidRequest(
                f"this model produces {self.dimension}-dimensional vectors and does not support "
                f"'dimensions' (it was not trained with Matryoshka loss)",
                param="dimensions",
            )
        if not 1 <= dimensions < self.dimension:
            raise InvalidRequest(
                f"dimensions must be between 1 and {self.dimension}", param="dimensions"
            )
        return normalize(vectors[:, :dimensions])

    def close(self) -> None:
        self.batcher.close()


class EmbeddingBatcher:
    """Collects concurrent requests for `wait_s` (up to `max_batch` inputs) into one run.

    One worker thread runs the encoder, so batches never overlap and the event loop only
    awaits futures. Each request's rows stay contiguous; vectors are split back per request.
    """

    def __init__(self, engine: EmbeddingEngine, *, max_batch: int = 32, wait_s: float = 0.005):
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
        self._pending: list[tuple[list[list[int]], asyncio.Future[np.ndarray]]] = []
        self._flush_scheduled = False
        self.batches_run = 0  # observable in benchmarks: how many encoder runs served the requests

    async def submit(self, rows: list[list[int]]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if len(rows) >= self.max_batch:  # already a full batch: no point waiting for company
            return await loop.run_in_executor(self._executor, self._run_chunks, rows)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((rows, future))
        if sum(len(r) for r, _ in self._pending) >= self.max_batch:
            self._flush(loop)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_later(self.wait_s, self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        rows = [row for request_rows, _ in pending for row in request_rows]
        task = loop.run_in_executor(self._executor, self._run_chunks, rows)
        task.add_done_callback(lambda done: self._deliver(done, pending))

    @staticmethod
    def _deliver(
        done: asyncio.Future[np.ndarray],
        pending: list[tuple[list[list[int]], asyncio.Future[np.ndarray]]],
    ) -> None:
        error = done.exception()
        start = 0
        for rows, future in pending:
            if future.done():  # the caller went away
                start += len(rows)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[start : start + len(rows)])
            start += len(rows)

    def _run_chunks(self, rows: list[list[int]]) -> np.ndarray:
        # Sorting by length keeps padding small inside each chunk of max_batch rows.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = np.zeros((len(rows), self.engine.dimension), dtype=np.float32)
        for start in range(0, len(order), self.max_batch):
            chunk = order[start : start + self.max_batch]
            out[chunk] = self.engine.embed_ids([rows[i] for i in chunk])
            self.batches_run += 1
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
