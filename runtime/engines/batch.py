"""Continuous batching for chat: one decode step advances every running sequence.

onnxruntime directly on the builder's decoder graph (not onnxruntime-genai): its
GroupQueryAttention takes each row's KV length from the attention mask (seqlens_k =
sum(mask) - 1) and, with past and present bound to one buffer (the builder's
`past_present_share_buffer`), writes each row's new keys in place at that row's own length.
So rows of different lengths decode in one `run` with no KV copied per step. Sequences join
between steps (prefilled in chunks into the next free row, one chunk per step, so running
streams keep flowing), and leave at once (the last row moves into the freed one). A leaving
row's prompt KV is kept for the next turn (kept_kv.py); a joining row starts from the longest
kept prefix of its prompt. Grammar masks (guidance.py) and each row's own seeded random
stream are applied when a row's token is sampled.

Measured (issue 13, this machine shared, load average 10-11 on 2 cores; synthetic
Qwen2.5-0.5B-dimension int4, 2 threads): aggregate decode 6.8 / 11.2 / 21.3 / 17.8 tok/s at
1 / 2 / 4 / 8 rows. A prefill here gives the logits of og.Generator exactly (0.0 difference);
a batch of 8 with different prompt lengths gives og's greedy tokens on fp32 and on int4
(tests/test_batching.py). With onnxruntime 1.32, real SmolLM2-135M cpu-int4: one decode step
of 2, 3, 4 or 8 identical rows gave each row the lone row's logits exactly (0.0 difference);
an earlier session reported 0.13 between a lone int4 row and rows in a batch on the 0.5B
dimensions (not re-measured here). MatMulNBits does compute prefill rows in pairs (a lone or odd
row differs: the ROW_ALIGNMENT note in prefix_cache.py), so kept KV and chunks start even.

Where a step's time goes (issue 13, benchmarks/profile_batch_step.py, real SmolLM2-135M
cpu-int4, 2 threads, 102-token prompt, 64 steps; the machine shared, others' nice CPU share
0.0-0.46 of the cores per reading, so absolute figures swing 2x): inside `run_with_iobinding`
95-96 % of a decode step at B = 1, 2, 4, 8; sampling, stop strings, detokenizing and the
hand-off to the event loop together 4-10 %. In the one quiet reading (others 0.0, spinning
off) the bare session gave 81.7 tok/s at B=1 and 233.4 at B=4 (2.86x), the engine in-process
93.1 and 218.2. So the Python around `run` cannot explain a 10 % service / og gap by itself,
and raw onnxruntime leaves room for more than 2x at 4 rows on 2 cores.

`session.run` releases the GIL, so the event loop and other threads run during every step.
Never imports onnxruntime at module level.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.engines.kept_kv import KeptPrefixes
from runtime.engines.threads import ort_session_options
from runtime.errors import GenerationFailed, KvBudgetFull
from runtime.settings import env_number

if TYPE_CHECKING:
    from runtime.engines.base import GenerationParams
    from runtime.engines.guidance import GrammarMask
    from runtime.engines.threads import SessionThreads

__all__ = ["BUDGET_ENV", "BatchScheduler", "supports_batching"]

log = logging.getLogger(__name__)

BUDGET_ENV = "FOUNDRY_KV_BUDGET_MB"
DEFAULT_BUDGET_MB = 1024
# Prefill chunk sizes (even, see kept_kv.py). `session.run` lets go of the GIL, so chunks are
# for the streams decoding beside a prefill (one decode step between chunks), not the loop.
# Alone, a 1,024-token prompt (real SmolLM2-135M cpu-int4, 2 threads, machine shared, 3 rounds
# alternated) took 1.49-1.51 s in chunks of 128, 1.43-1.48 s in 256, 1.66-1.78 s in one run.
PREFILL_CHUNK_BESIDE = 128
PREFILL_CHUNK_ALONE = 256
_GRAPH_INPUTS = {"input_ids", "attention_mask", "past_key_names", "past_value_names"}


def supports_batching(artifact: Path) -> bool:
    """Whether the decoder graph takes exactly ids, mask and KV (the builder's GQA models)."""
    try:
        genai = json.loads((artifact / "genai_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    decoder = genai.get("model", {}).get("decoder", {})
    return (
        set(decoder.get("inputs", {})) == _GRAPH_INPUTS
        and bool(genai.get("search", {}).get("past_present_share_buffer"))
        and "pipeline" not in decoder
    )


def budget_bytes() -> int:
    """`FOUNDRY_KV_BUDGET_MB` in bytes (default 1024 MiB)."""
    value = env_number(BUDGET_ENV, float)
    return int((DEFAULT_BUDGET_MB if value is None else value) * 1024 * 1024)


class _Row:
    """One sequence in the batch: how much of it the KV holds and the token to feed next."""

    def __init__(self, seq: Any, reserved: int, grammar: GrammarMask | None = None):
        self.seq = seq
        self.reserved = reserved  # KV bytes admission counted for it
        self.length = 0  # tokens whose keys are in the buffer
        self.pending = -1  # sampled, not yet fed
        self.grammar = grammar
        # Its own random stream: a seed gives one text whatever else is in the batch.
        self.rng = np.random.default_rng(seq.params.seed)

    @property
    def params(self) -> GenerationParams:
        return self.seq.params  # type: ignore[no-any-return]

    @property
    def prefilled(self) -> bool:
        return self.length >= len(self.seq.prompt)


class BatchScheduler:
    """One thread stepping one onnxruntime session over up to `max_batch` rows."""

    def __init__(
        self,
        artifact: Path,
        threads: SessionThreads,
        *,
        eos_ids: set[int],
        max_batch: int,
        context_length: int,
        bytes_per_token: int,
        on_done: Callable[[], None],
        budget: int | None = None,
        kept: KeptPrefixes | None = None,
    ):
        import onnxruntime as ort

        genai = json.loads((artifact / "genai_config.json").read_text(encoding="utf-8"))
        decoder = genai["model"]["decoder"]
        self._session = ort.InferenceSession(
            str(artifact / decoder["filename"]),
            ort_session_options(threads),
            providers=["CPUExecutionProvider"],
        )
        layers = int(decoder["num_hidden_layers"])
        self._kv_names = [
            (
                decoder["inputs"][f"past_{kind}_names"] % i,
                decoder["outputs"][f"present_{kind}_names"] % i,
            )
            for i in range(layers)
            for kind in ("key", "value")
        ]
        first = next(i for i in self._session.get_inputs() if i.name == self._kv_names[0][0])
        self._kv_dtype = np.float16 if "float16" in first.type else np.float32
        self._row_shape = (int(decoder["num_key_value_heads"]), int(decoder["head_size"]))
        out = next(o for o in self._session.get_outputs() if o.name == "logits")
        self._logits_dtype = np.float16 if "float16" in out.type else np.float32
        self._last_logits_only = out.shape[1] == 1  # the builder's prune_lm_head
        self._vocab = int(genai["model"].get("vocab_size") or out.shape[2])
        # One binding per (first row, rows, capacity): the KV views never move between steps,
        # so only ids, mask and logits are bound again (120 bind calls a step fewer at 30 layers).
        self._bindings: dict[tuple[int, int], tuple[Any, np.ndarray]] = {}
        self.eos_ids = eos_ids
        self.max_batch = max_batch
        self.context_length = context_length
        self.bytes_per_token = bytes_per_token
        self.budget = budget_bytes() if budget is None else budget
        self._on_done = on_done
        self.kept = kept or KeptPrefixes(bytes_per_token, context_length)
        self._capacity = 0
        self._buffers: dict[str, np.ndarray] = {}
        self._running: list[_Row] = []  # rows 0..n-1 of the buffers, decoding
        self._joining: _Row | None = None  # row n, prefilling
        self._waiting: list[_Row] = []
        self._reserved = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    # --- any thread --------------------------------------------------------------------------
    def submit(self, seq: Any, grammar: GrammarMask | None = None) -> None:
        """Queue `seq` (chat.py's _Sequence); it joins the batch between steps.

        Raises:
            KvBudgetFull: its prompt + max_tokens would take the KV held past the budget.
        """
        need = (len(seq.prompt) + seq.params.max_tokens) * self.bytes_per_token
        with self._cond:
            if self._reserved and self._reserved + need > self.budget:
                raise KvBudgetFull(
                    f"the running sequences hold {self._reserved // 2**20} MiB of KV cache and "
                    f"this one needs {need // 2**20} MiB more ({BUDGET_ENV}="
                    f"{self.budget // 2**20}); retry shortly",
                    retry_after=1,
                )
            self._reserved += need
            self._waiting.append(_Row(seq, need, grammar))
            self._cond.notify()

    def wake(self) -> None:
        """A sequence was cancelled: let the loop drop it before its next step."""
        with self._cond:
            self._cond.notify()

    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # --- the scheduler thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._running or self._joining or self._closed):
                    self._cond.wait()
                closed = self._closed
            if closed:
                for row in [*self._running, *self._waiting, *filter(None, [self._joining])]:
                    self._leave(row, "cancelled")
                return
            try:
                self._drop_cancelled()
                self._prefill_step()
                if self._running:
                    self._decode_step()
            except Exception as exc:
                self._fail_all(GenerationFailed(f"generation failed in the batch: {exc}"))

    def _drop_cancelled(self) -> None:
        for row in [r for r in self._running if r.seq.cancelled]:
            self._leave(row, "cancelled")
        if self._joining is not None and self._joining.seq.cancelled:
            row, self._joining = self._joining, None
            self._leave(row, "cancelled")
        with self._cond:
            gone = [r for r in self._waiting if r.seq.cancelled]
            self._waiting = [r for r in self._waiting if not r.seq.cancelled]
        for row in gone:
            self._leave(row, "cancelled")

    def _prefill_step(self) -> None:
        """One chunk of the joining row's prompt; a fully prefilled row starts decoding."""
        if self._joining is None and len(self._running) < self.max_batch:
            with self._cond:
                self._joining = self._waiting.pop(0) if self._waiting else None
            if self._joining is not None:
                seq = self._joining.seq
                self._ensure_capacity(len(seq.prompt) + seq.params.max_tokens)
                self._reuse(self._joining)
        row = self._joining
        if row is None:
            return
        size = PREFILL_CHUNK_BESIDE if self._running else PREFILL_CHUNK_ALONE
        left = len(row.seq.prompt) - row.length
        if left <= size + size // 2:  # a 130-token prompt in one run, not 128 then 2
            size = left
        chunk = row.seq.prompt[row.length : row.length + size]
        logits = self._run(len(self._running), [row], np.asarray([chunk], dtype=np.int64))
        row.length += len(chunk)
        if row.prefilled:
            self._joining = None
            self._running.append(row)
            self._accept(row, logits[0])

    def _reuse(self, row: _Row) -> None:
        """Start `row` from the longest kept prefix of its prompt (copied into its buffer row)."""
        if not self.kept.accepts(row.params):
            return
        found = self.kept.take(row.seq.prompt)
        if found is None:
            return
        length, kv = found
        index = len(self._running)
        for (past, _), held in zip(self._kv_names, kv, strict=True):
            self._buffers[past][index, :, :length] = held[:, :length]
        row.length = length
        row.seq.cached_tokens = length

    def _keep(self, index: int, row: _Row) -> None:
        """Copy the prompt KV of the row at buffer `index` out, for the next turn."""
        if self._closed or not self.kept.accepts(row.params):
            return
        length = self.kept.keepable(min(row.length, len(row.seq.prompt)))
        if length <= 0:
            return
        kv = [self._buffers[past][index, :, :length].copy() for past, _ in self._kv_names]
        self.kept.keep(list(row.seq.prompt[:length]), kv)

    def _decode_step(self) -> None:
        rows = list(self._running)
        ids = np.asarray([[row.pending] for row in rows], dtype=np.int64)
        logits = self._run(0, rows, ids)
        for row in rows:  # all first: a row that leaves moves the last one, with what it holds
            row.length += 1
        for row, row_logits in zip(rows, logits, strict=True):
            self._accept(row, row_logits)

    def _accept(self, row: _Row, logits: np.ndarray) -> None:
        """Sample the row's next token; hand it to the stream or end the row."""
        seq, params = row.seq, row.params
        produced = seq.completion_tokens
        minimum = params.max_tokens if params.ignore_eos else params.min_tokens
        if row.grammar is not None:
            logits = row.grammar.apply(logits)
        if produced < minimum and self.eos_ids:
            held = logits.copy()
            held[list(self.eos_ids)] = -np.inf
            if row.grammar is None or np.isfinite(held).any():  # a finished grammar wins
                logits = held
        token = _sample(logits, params, row.rng)
        if token in self.eos_ids:
            self._leave(row, "stop")
            return
        seq.push_token(token)
        grammar_done = row.grammar is not None and not row.grammar.consume(token)
        if seq.stops.stopped or grammar_done:
            self._leave(row, "stop")
        elif seq.completion_tokens >= params.max_tokens:
            self._leave(row, "length")
        else:
            row.pending = token

    def _run(self, first_row: int, rows: list[_Row], ids: np.ndarray) -> np.ndarray:
        """One session run over buffer rows first_row.. with `ids` [rows, S]; last logits.

        The logits array is kept with its binding and bound again only when its shape changes
        (a prefill after decode steps on the same rows), so a decode step binds ids and mask.
        The array is overwritten by the next run: callers use it before they run again.
        """
        steps = ids.shape[1]
        lengths = np.fromiter((row.length for row in rows), np.int64, len(rows)) + steps
        mask = (np.arange(int(lengths.max())) < lengths[:, None]).astype(np.int64)
        key = (first_row, len(rows))
        binding, logits = self._bindings.get(key, (None, None))
        if binding is None:
            binding = self._session.io_binding()
            for past, present in self._kv_names:
                view = self._buffers[past][first_row : first_row + len(rows)]
                dims = list(view.shape)
                binding.bind_input(past, "cpu", 0, self._kv_dtype, dims, view.ctypes.data)
                binding.bind_output(present, "cpu", 0, self._kv_dtype, dims, view.ctypes.data)
        shape = (len(rows), 1 if self._last_logits_only else steps, self._vocab)
        if logits is None or logits.shape != shape:
            logits = np.empty(shape, self._logits_dtype)
            binding.bind_output(
                "logits", "cpu", 0, self._logits_dtype, logits.shape, logits.ctypes.data
            )
        self._bindings[key] = (binding, logits)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", mask)
        self._session.run_with_iobinding(binding)
        return logits[:, -1, :].astype(np.float32, copy=False)  # type: ignore[no-any-return]

    def _ensure_capacity(self, tokens: int) -> None:
        """Buffers [max_batch, kv heads, capacity, head size] per layer, grown by doubling.

        numpy asks for transparent huge pages on arrays this size (granted where THP is on
        madvise, as on this VM), so a row in use holds its whole capacity, not only its tokens
        (its first token in each head faults in 2 MiB). Measured against small pages (an mmap
        advised MADV_NOHUGEPAGE): huge pages decode 1-4 % faster and 4 clients 4 % faster
        (alternated, 4 rounds), while the first burst of rows after a capacity growth runs
        ~10 % slower as the kernel zeroes their pages. Speed won.
        """
        if tokens <= self._capacity:
            return
        capacity = min(self.context_length, max(256, 1 << (tokens - 1).bit_length()))
        heads, width = self._row_shape
        shape = (self.max_batch, heads, capacity, width)
        fresh = {past: np.zeros(shape, dtype=self._kv_dtype) for past, _ in self._kv_names}
        held = max((row.length for row in self._running), default=0)
        if self._buffers and held:
            for past, buffer in self._buffers.items():
                fresh[past][:, :, :held] = buffer[:, :, :held]
        self._buffers, self._capacity = fresh, capacity
        self._bindings.clear()  # they point into the old buffers

    def _leave(self, row: _Row, reason: str) -> None:
        """End `row` now: free its budget and its buffer row (the last running row moves in)."""
        if row in self._running:
            index = self._running.index(row)
            self._keep(index, row)
            last = len(self._running) - 1
            if index != last:
                moved = self._running[last]
                for buffer in self._buffers.values():
                    buffer[index, :, : moved.length] = buffer[last, :, : moved.length]
                self._running[index] = moved
            self._running.pop()
            if self._joining is not None and self._joining.length:
                for buffer in self._buffers.values():  # the joining row sits right after
                    buffer[last, :, : self._joining.length] = buffer[
                        last + 1, :, : self._joining.length
                    ]
        with self._cond:
            self._reserved -= row.reserved
        # Counted out before the last chunk is delivered: a client that reacts to its end at
        # once (Ollama's keep_alive=0 unload, the next request at the queue's limit) must not
        # find its own finished sequence still in flight.
        self._on_done()
        row.seq.finish("stop" if row.seq.stops.stopped else reason)

    def _fail_all(self, error: GenerationFailed) -> None:
        log.error("batch step failed: %s", error.message)
        rows = [*self._running, *filter(None, [self._joining])]
        self._running, self._joining = [], None
        for row in rows:
            with self._cond:
                self._reserved -= row.reserved
            self._on_done()
            row.seq.fail(error)


def _sample(logits: np.ndarray, params: GenerationParams, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; else temperature, top-k, then top-p (nucleus) sampling."""
    if params.temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
    k = params.top_k if 0 < params.top_k < len(scaled) else len(scaled)
    top = np.argpartition(-scaled, k - 1)[:k] if k < len(scaled) else np.arange(len(scaled))
    top = top[np.argsort(-scaled[top])]
    weights = np.exp(scaled[top] - scaled[top[0]])
    probs = weights / weights.sum()
    if params.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
        probs = probs[:keep] / probs[:keep].sum()
        top = top[:keep]
    return int(top[rng.choice(len(top), p=probs)])
