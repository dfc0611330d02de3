"""ChatEngine: text generation off the event loop, one continuous batch per loaded model.

By default every request of a loaded chat model runs in one continuous batch
(`runtime/engines/batch.py`: onnxruntime directly on the builder's decoder graph, one step
advances every running sequence, requests join between steps, long prompts prefill in chunks
between decode steps, finished ones leave at once). Sampling with a per-sequence seed, stop
strings, `min_tokens`, `ignore_eos`, grammar masks (llguidance, `guidance.py`) and prefix reuse
(a finished prompt's KV kept for the next turn, `kept_kv.py`) all run inside it, admission is
bounded by a KV byte budget (`FOUNDRY_KV_BUDGET_MB`, 429 past it), and onnxruntime-genai never
loads the weights: they are loaded once, by the batch's session.

One fallback remains, for artifacts the batch cannot drive (`supports_batching` false: a
decoder with other inputs, or KV not shared between past and present): one og.Generator per
request (`_GeneratorRun`), without prefix reuse. 0.18's og.Generator holds the GIL inside
append_tokens and generate_next_token, hence chunked prefill and a GIL release after every step
there (`gil.py`). Checked after the engine, batching, prefix-reuse, structured-output and
tool-calling tests: every cpu artifact they built (llama, qwen2, qwen3; fp32, int4, pruned LM
head or not) takes the batch; the one that did not is a `dml-int4` build, whose decoder also
takes `position_ids`.
The og.Engine path (0.18's static batch: 1.8-8.7x the time to first token for 0.81-1.02x the
aggregate, and it cannot run pruned artifacts) and the kept-generator reuse path were removed
(issue 13): the batch does both their jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import numpy as np
import onnxruntime_genai as og
from tokenizers import Tokenizer

from runtime.engines.base import Chunk, GenerationParams, GenerationRecord, JsonObject
from runtime.engines.batch import BatchScheduler, supports_batching
from runtime.engines.detokenize import IncrementalDecoder, StopMatcher
from runtime.engines.gil import append_in_chunks, let_the_loop_run
from runtime.engines.guidance import Guide
from runtime.engines.kept_kv import KeptPrefixes
from runtime.engines.prefix_cache import kv_bytes_per_token
from runtime.engines.prompt import load_chat_template
from runtime.engines.threads import genai_overlay, resolve_threads
from runtime.errors import ContextTooLong, FoundryError, GenerationFailed, InvalidRequest, QueueFull
from runtime.store.metadata import template_thinks

if TYPE_CHECKING:
    from runtime.store.metadata import ModelMetadata

__all__ = ["ChatEngine", "GenerationStream"]

log = logging.getLogger(__name__)

MAX_BATCH = 8
_DONE = object()  # queue sentinel after the final chunk


class ChatEngine:
    """A loaded chat artifact: template, tokenizer, and the step loop that generates."""

    task = "chat"

    def __init__(
        self,
        path: Path,
        metadata: ModelMetadata,
        *,
        model_id: str,
        queue_size: int = 64,
        max_batch: int = MAX_BATCH,
        threads: int | None = None,
    ):
        """`threads`: None chooses per machine (threads.py)."""
        self.path = Path(path)
        self.model_id = model_id
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.on_finish: Callable[[GenerationRecord], None] | None = None
        self.template = load_chat_template(self.path)
        if metadata.thinks is None:  # packed before `thinks` was kept: read the template now
            thinks = template_thinks(self.template.source)
            metadata = msgspec.structs.replace(metadata, thinks=thinks)
        self.metadata = metadata
        batching = supports_batching(self.path)
        # threads.py: per machine, FOUNDRY_THREADS; og's sessions (no batch) keep og's spinning
        self.threads = resolve_threads(threads, spin_control=batching)
        # tokenizers (not og.Tokenizer): og's decode drops everything after an invalid UTF-8
        # byte, which random-weight and byte-level models produce mid-stream.
        self._tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        genai = json.loads((self.path / "genai_config.json").read_text())
        self.context_length = int(
            metadata.context_length or genai["model"].get("context_length") or 2048
        )
        self.vocab_size = int(genai["model"].get("vocab_size") or 0)
        eos = genai["model"].get("eos_token_id")
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        # The continuous batch (batch.py) serves every request when the artifact allows it;
        # then onnxruntime-genai never loads the weights (they are loaded once, by the batch).
        self._scheduler: BatchScheduler | None = None
        self._guide: Guide | None = None
        self._model: Any = None
        bytes_per_token = kv_bytes_per_token(self.path)
        self.prefix_cache = KeptPrefixes(bytes_per_token, self.context_length)
        if batching:
            self._scheduler = BatchScheduler(
                self.path,
                self.threads,
                eos_ids=self.eos_ids,
                max_batch=max_batch,
                context_length=self.context_length,
                bytes_per_token=bytes_per_token,
                on_done=lambda: self._count(-1),
                kept=self.prefix_cache,
            )
            self._guide = Guide(self.path / "tokenizer.json", self.vocab_size, self.eos_ids)
        else:
            log.warning("%s: the batch cannot drive this artifact; og.Generator per request", path)
            config = og.Config(str(self.path))
            config.overlay(genai_overlay(self.threads))
            self._model = og.Model(config)
        self._count_lock = threading.Lock()
        self._lock = threading.Lock()
        self._inflight = 0
        self._closed = False
        self._generator_slots = threading.Semaphore(max_batch)
        # Prefills in turn, not interleaved chunk by chunk (streams already decoding still step
        # between chunks): 8 clients at once through the service, median time to first token
        # 14.9/16.3 s in turn vs 22.1/23.9 s interleaved and 21.8/23.7 s unchunked, same tok/s.
        self._prefill_lock = threading.Lock()
        self._live: set[_Sequence] = set()  # every sequence not finished, for close()

    # --- text ------------------------------------------------------------------
    def render_prompt(
        self,
        messages: list[JsonObject],
        tools: list[JsonObject] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        return self.template.render(messages, tools, add_generation_prompt)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; a rendered chat template already holds its special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int] | Any) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True) if len(ids) else ""

    # --- generation ----------------------------------------------------------------
    def active_requests(self) -> int:
        """Requests submitted and not finished (running or waiting in the engine)."""
        return self._inflight

    def waiting_requests(self) -> int:
        batched = self._scheduler.waiting() if self._scheduler is not None else 0
        return max(batched, self._inflight - self.max_batch)

    def stream(self, prompt_tokens: list[int], params: GenerationParams) -> GenerationStream:
        """Submit one sequence; iterate the result with `async for`, `aclose()` cancels it.

        Called on the event loop. Checks run here, before any byte is sent.

        Raises:
            ContextTooLong: the prompt leaves no room to generate.
            QueueFull: `max_batch + queue_size` requests are already in flight.
        """
        if self._closed:
            raise GenerationFailed(f"model {self.model_id!r} was unloaded")
        room = self.context_length - len(prompt_tokens)
        if room < 1:
            raise ContextTooLong(
                f"prompt is {len(prompt_tokens)} tokens; model {self.model_id!r} has a context of "
                f"{self.context_length}",
                param="messages",
            )
        if not prompt_tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if self._inflight >= self.max_batch + self.queue_size:
            raise QueueFull(
                f"the generation queue is full ({self.queue_size} waiting); retry shortly",
                retry_after=1,
            )
        params = _clamped(params, room)
        stream = GenerationStream(self, asyncio.get_running_loop())
        seq = _Sequence(self, stream, list(prompt_tokens), params)
        stream._seq = seq
        if self._scheduler is not None:
            grammar = self._guide.mask(params.guidance) if params.guidance else None  # type: ignore[union-attr]
            self._count(+1)
            try:
                self._scheduler.submit(seq, grammar)
            except FoundryError:
                self._count(-1)
                raise
            return stream
        self._count(+1)
        with self._lock:
            self._live.add(seq)
        threading.Thread(
            target=_GeneratorRun(self, seq).run, daemon=True, name=f"generator-{self.model_id}"
        ).start()
        return stream

    def _forget(self, seq: _Sequence) -> None:
        with self._lock:
            self._live.discard(seq)

    def _count(self, delta: int) -> None:
        with self._count_lock:
            self._inflight += delta

    def cancel(self, seq: _Sequence) -> None:
        seq.cancelled = True
        if self._scheduler is not None:
            self._scheduler.wake()

    def close(self) -> None:
        """Stop generating; every running or waiting request ends with 'cancelled'.

        On the og.Generator fallback each sequence is marked cancelled (its thread ends it
        before the next token: issue 12 found unload(force=true) left them running to the end).
        """
        with self._lock:
            self._closed = True
            for seq in self._live:
                seq.cancelled = True
        if self._scheduler is not None:
            self._scheduler.close()
        self.prefix_cache.clear()


class _Sequence:
    """One request's state on the generating thread: tokens -> safe text -> chunks."""

    def __init__(
        self,
        engine: ChatEngine,
        stream: GenerationStream,
        prompt: list[int],
        params: GenerationParams,
    ):
        self.engine = engine
        self.stream = stream
        self.prompt = prompt
        self.params = params
        self.decoder = IncrementalDecoder(engine.decode)
        self.stops = StopMatcher(params.stop)
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.cancelled = False
        self.finished = False

    def push_token(self, token_id: int) -> None:
        if self.finished or self.stops.stopped:
            return
        self.completion_tokens += 1
        text = self.stops.push(
            self.decoder.push(token_id), check=self.completion_tokens >= self.params.min_tokens
        )
        self.stream._deliver(self._chunk(text, [token_id], None))

    def finish(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.engine._forget(self)
        tail = "" if self.stops.stopped else self.stops.push(self.decoder.flush())
        tail += self.stops.flush()
        self.stream._deliver(self._chunk(tail, [], reason))
        self.stream._deliver(_DONE)

    def fail(self, error: FoundryError) -> None:
        if self.finished:
            return
        self.finished = True
        self.engine._forget(self)
        self.stream._deliver(error)
        self.stream._deliver(_DONE)

    def _chunk(self, text: str, ids: list[int], reason: str | None) -> Chunk:
        return Chunk(
            text=text,
            token_ids=ids,
            finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=len(self.prompt),
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
        )


class _GeneratorRun:
    """One request on its own og.Generator in a worker thread (the module docstring says when)."""

    def __init__(self, engine: ChatEngine, seq: _Sequence):
        self.engine = engine
        self.seq = seq

    def run(self) -> None:
        seq, params = self.seq, self.seq.params
        with self.engine._generator_slots:  # at most max_batch generate at once; the rest wait
            self._generate(seq, params)

    def _generate(self, seq: _Sequence, params: GenerationParams) -> None:
        if seq.cancelled:
            self.engine._count(-1)
            seq.finish("cancelled")
            return
        try:
            gp = og.GeneratorParams(self.engine._model)
            minimum = params.max_tokens if params.ignore_eos else params.min_tokens
            options: dict[str, Any] = {
                "max_length": len(seq.prompt) + params.max_tokens,
                "min_length": len(seq.prompt) + minimum if minimum else 0,
            }
            if params.temperature > 0:
                options |= {
                    "do_sample": True,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "top_k": params.top_k or self.engine.vocab_size,
                }
                if params.seed is not None:
                    options["random_seed"] = params.seed
            else:
                options["do_sample"] = False
            gp.set_search_options(**options)
            if params.guidance:
                try:
                    gp.set_guidance(*params.guidance)
                except Exception as exc:
                    raise InvalidRequest(
                        f"the grammar was refused: {exc}", param="response_format"
                    ) from exc
            generator = self._generator(gp, params)
            prompt = np.asarray(seq.prompt, dtype=np.int32)
            with self.engine._prefill_lock:  # one prefill at a time, in turn: FIFO first tokens
                if params.guidance:  # a grammar sees one prompt
                    generator.append_tokens(prompt)
                else:
                    append_in_chunks(generator, prompt, lambda: seq.cancelled)
            while not generator.is_done() and not seq.cancelled and not seq.stops.stopped:
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                if token in self.engine.eos_ids:
                    break  # EOS is not text
                seq.push_token(token)
                let_the_loop_run(first_token=seq.completion_tokens == 1)
        except FoundryError as exc:
            self.engine._count(-1)
            seq.fail(exc)
        except Exception as exc:
            self.engine._count(-1)
            seq.fail(GenerationFailed(f"generation failed: {exc}"))
        else:
            # Counted out before the last chunk is delivered, as on the batch (batch._leave).
            self.engine._count(-1)
            if seq.cancelled:
                seq.finish("cancelled")
            elif seq.stops.stopped or seq.completion_tokens < params.max_tokens:
                seq.finish("stop")
            else:
                seq.finish("length")

    def _generator(self, gp: Any, params: GenerationParams) -> Any:
        """og.Generator for `gp`; a grammar it cannot compile is the request's fault (a 400).

        0.18.0 compiles guidance here, not in `set_guidance` ("Error creating grammar: ...").
        When creation fails with guidance set, a 1-token generator without it tells the two
        causes apart; it runs only on that failure, so the happy path pays nothing.
        """
        try:
            return og.Generator(self.engine._model, gp)
        except Exception as exc:
            if not params.guidance:
                raise
            plain = og.GeneratorParams(self.engine._model)
            plain.set_search_options(max_length=1)
            try:
                og.Generator(self.engine._model, plain)
            except Exception:
                raise exc from None
            raise InvalidRequest(
                f"the grammar cannot be compiled: {exc}", param="response_format"
            ) from exc


class _Outbox:
    """Chunks on their way to one event loop, handed over in one `call_soon_threadsafe`.

    A batch step produces a chunk per row; waking the loop once for all of them, rather than
    once per chunk, saves the loop a self-pipe read and a callback per row on the cores the
    next step needs. The first item put into an empty outbox schedules the flush; items put
    before the loop runs it ride along.
    """

    _by_loop: ClassVar[dict[int, _Outbox]] = {}
    _create: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue[Any], Any]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Outbox:
        with cls._create:
            outbox = cls._by_loop.get(id(loop))
            if outbox is None or outbox._loop is not loop:
                outbox = cls._by_loop[id(loop)] = cls(loop)
                for key in [k for k, o in cls._by_loop.items() if o._loop.is_closed()]:
                    del cls._by_loop[key]
            return outbox

    def put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        """Queue `item`; a loop already closed has no one left to read it (a generating
        thread must not die of that: it serves every other request)."""
        if self._loop.is_closed():
            return
        with self._lock:
            self._items.append((queue, item))
            if len(self._items) > 1:
                return
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # closed between the check and the call
            log.debug("stream's event loop closed; chunk dropped")

    def _flush(self) -> None:  # on the loop
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


class GenerationStream:
    """Async iterator of `Chunk`s for one sequence; `aclose()` (or leaving `async with`) cancels.

    Raises from `__anext__` the FoundryError the generation failed with.
    """

    def __init__(self, engine: ChatEngine, loop: asyncio.AbstractEventLoop):
        self._engine = engine
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._seq: _Sequence | None = None
        self._done = False
        self._started = time.perf_counter()
        self._first_token_s: float | None = None
        self._last: Chunk | None = None

    def _deliver(self, item: Any) -> None:  # any thread
        """Hand `item` to the consumer's loop (through its outbox: one wake-up per batch step)."""
        _Outbox.of(self._loop).put(self._queue, item)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> Chunk:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _DONE:
            self._done = True
            self._record()
            raise StopAsyncIteration
        if isinstance(item, FoundryError):
            self._done = True
            raise item
        if self._first_token_s is None and item.token_ids:
            self._first_token_s = time.perf_counter() - self._started
        self._last = item
        return item

    async def aclose(self) -> None:
        if not self._done and self._seq is not None:
            self._done = True
            self._engine.cancel(self._seq)
            self._record(cancelled=True)

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _record(self, cancelled: bool = False) -> None:
        listener = self._engine.on_finish
        if listener is None:
            return
        last = self._last or Chunk()
        try:
            listener(
                GenerationRecord(
                    model_id=self._engine.model_id,
                    prompt_tokens=len(self._seq.prompt) if self._seq else 0,
                    completion_tokens=last.completion_tokens,
                    cached_tokens=last.cached_tokens,
                    finish_reason="cancelled" if cancelled else (last.finish_reason or "stop"),
                    first_token_s=self._first_token_s,
                    total_s=time.perf_counter() - self._started,
                )
            )
        except Exception:  # a metrics listener must never break a response
            log.exception("generation listener failed")


def _clamped(params: GenerationParams, room: int) -> GenerationParams:
    """The params with max_tokens (and min_tokens) fitted into the context left."""
    max_tokens = min(params.max_tokens, room)
    return msgspec.structs.replace(
        params, max_tokens=max_tokens, min_tokens=min(params.min_tokens, max_tokens)
    )
