"""ChatEngine: text generation off the event loop, one continuous batch per loaded model.

By default every request of a loaded chat model runs in one continuous batch
(`runtime/engines/batch.py`: onnxruntime directly on the builder's decoder graph, one step
advances every running sequence, requests join between steps, long prompts prefill in chunks
between decode steps, finished ones leave at once). Sampling with a per-sequence seed, stop
strings, `min_tokens`, `ignore_eos`, grammar masks (llguidance, `guidance.py`) and prefix reuse
(a finished prompt's KV kept for the next turn, `kept_kv.py`) all run inside it, admission is
bounded by a KV byte budget (`FOUNDRY_KV_BUDGET_MB`, 429 past it), and onnxruntime-genai never
loads the weights: they are loaded once, by the batch's session.

The og paths remain only for artifacts the batch cannot drive (`supports_batching` false: a
decoder with other inputs, or KV not shared between past and present) and when asked for with
`batching="generator"` / `"engine"` (FOUNDRY_CHAT_BATCHING): one og.Generator per request
(`_GeneratorRun`, with kept generators for prefix reuse, `prefix_cache.py`), or 0.18's static
og.Engine for full-logits artifacts. Measured earlier on those paths (bench_batching.py,
Qwen2.5-0.5B dimensions, int4): the static Engine made time to first token 1.8-8.7x longer
than one og.Generator per request for 0.81-1.02x the aggregate tok/s, and cannot run pruned
artifacts; 0.18's og.Generator holds the GIL inside append_tokens and generate_next_token, hence
chunked prefill and a GIL release after every step there (`gil.py`). `session.run`, which the
batch uses, releases the GIL.

Through the service, the batch (then opt-in) against one og.Generator per request on 1 thread
(bench_peers, synthetic 0.5B int4, load average 9-11 on 2 cores): aggregate 27.9 vs 16.1 tok/s
at 4 clients, slowest /health while 8 stream 0.10 vs 3.8 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime_genai as og
from tokenizers import Tokenizer

from runtime.engines.base import Chunk, GenerationParams, GenerationRecord
from runtime.engines.batch import BatchScheduler, supports_batching
from runtime.engines.detokenize import IncrementalDecoder, StopMatcher
from runtime.engines.gil import append_in_chunks, let_the_loop_run
from runtime.engines.guidance import Guide
from runtime.engines.prefix_cache import (
    PrefixCache,
    budget_from_env,
    kv_bytes_per_token,
    run_with_reuse,
)
from runtime.engines.prompt import load_chat_template
from runtime.engines.threads import genai_overlay, resolve_threads
from runtime.errors import ContextTooLong, FoundryError, GenerationFailed, InvalidRequest, QueueFull

__all__ = ["ChatEngine", "GenerationStream"]

log = logging.getLogger(__name__)

MAX_BATCH = 8
BATCHING_ENV = "FOUNDRY_CHAT_BATCHING"  # "engine": og.Engine for full-logits artifacts
_FINISH = {
    og.FinishReason.EOS: "stop",
    og.FinishReason.STOP_STRING: "stop",
    og.FinishReason.MAX_GENERATED_TOKENS: "length",
    og.FinishReason.MAX_SESSION_TOKENS: "length",
    og.FinishReason.CANCELLED: "cancelled",
}
_DONE = object()  # queue sentinel after the final chunk


class ChatEngine:
    """A loaded chat artifact: template, tokenizer, and the step loop that generates."""

    task = "chat"

    def __init__(
        self,
        path: Path,
        metadata: dict[str, Any],
        *,
        queue_size: int = 64,
        max_batch: int = MAX_BATCH,
        batching: str | None = None,
        threads: int | None = None,
    ):
        """`batching`: "generator" (the default) is one og.Generator per request;
        "continuous" batches requests without a grammar or seed (batch.py); "engine" serves
        full-logits artifacts on og.Engine; None reads FOUNDRY_CHAT_BATCHING.
        `threads`: None chooses per machine (threads.py)."""
        self.path = Path(path)
        self.batching = batching or os.environ.get(BATCHING_ENV) or "continuous"
        self.metadata = metadata
        self.model_id = str(metadata.get("model_id") or self.path.name)
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.on_finish: Callable[[GenerationRecord], None] | None = None
        self.template = load_chat_template(self.path)
        self.threads = resolve_threads(threads)  # threads.py: per machine, FOUNDRY_THREADS
        # tokenizers (not og.Tokenizer): og's decode drops everything after an invalid UTF-8
        # byte, which random-weight and byte-level models produce mid-stream.
        self._tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self._engine: Any = None  # created on the step thread: og.Engine is thread-affine
        genai = json.loads((self.path / "genai_config.json").read_text())
        self.context_length = int(
            metadata.get("context_length") or genai["model"].get("context_length") or 2048
        )
        self.vocab_size = int(genai["model"].get("vocab_size") or 0)
        eos = genai["model"].get("eos_token_id")
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        # The continuous batch (batch.py) serves every request when the artifact allows it;
        # then onnxruntime-genai never loads the weights (they are loaded once, by the batch).
        self._scheduler: BatchScheduler | None = None
        self._guide: Guide | None = None
        self._model: Any = None
        self.prefix_cache: Any
        if self.batching == "continuous" and supports_batching(self.path):
            self._scheduler = BatchScheduler(
                self.path,
                self.threads,
                eos_ids=self.eos_ids,
                max_batch=max_batch,
                context_length=self.context_length,
                bytes_per_token=kv_bytes_per_token(self.path),
                on_done=lambda: self._count(-1),
            )
            self.prefix_cache = self._scheduler.kept
            self._guide = Guide(self.path / "tokenizer.json", self.vocab_size, self.eos_ids)
        else:
            config = og.Config(str(self.path))
            config.overlay(
                json.dumps({"engine": {"static_batching": {"max_batch_size": max_batch}}})
            )
            config.overlay(genai_overlay(self.threads))
            self._model = og.Model(config)
            # Prefix reuse across chat turns (issue 8): kept generators, bounded in KV bytes.
            self.prefix_cache = PrefixCache(
                self._model,
                bytes_per_token=kv_bytes_per_token(self.path),
                context_length=self.context_length,
                vocab_size=self.vocab_size,
                budget_bytes=budget_from_env(),
            )
        self._count_lock = threading.Lock()
        self._lock = threading.Condition()
        self._incoming: list[_Sequence] = []
        self._cancels: list[_Sequence] = []
        self._running: dict[int, _Sequence] = {}  # id(og.Request) -> sequence
        self._inflight = 0
        self._closed = False
        self._engine_masks_logits = True
        self._engine_usable = True
        self._generator_slots = threading.Semaphore(max_batch)
        # Prefills in turn, not interleaved chunk by chunk (streams already decoding still step
        # between chunks): 8 clients at once through the service, median time to first token
        # 14.9/16.3 s in turn vs 22.1/23.9 s interleaved and 21.8/23.7 s unchunked, same tok/s.
        self._prefill_lock = threading.Lock()
        self._live: set[_Sequence] = set()  # every sequence not finished, for close()
        ready: list[BaseException | None] = []
        started = threading.Event()
        if self._scheduler is not None:
            self._thread = None
            return
        self._thread = threading.Thread(
            target=self._step_loop,
            args=(ready, started),
            name=f"engine-{self.model_id}",
            daemon=True,
        )
        self._thread.start()
        started.wait()
        if ready[0] is not None:
            raise GenerationFailed(f"cannot start the engine for {self.model_id!r}: {ready[0]}")

    # --- text ------------------------------------------------------------------
    def render_prompt(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
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
        if self._needs_generator(params) and not (
            self._reuses_prefix(seq) and not self._engine_usable
        ):
            threading.Thread(
                target=_GeneratorRun(self, seq).run, daemon=True, name=f"generator-{self.model_id}"
            ).start()
        elif self._reuses_prefix(seq):
            threading.Thread(
                target=run_with_reuse,
                daemon=True,
                name=f"reuse-{self.model_id}",
                args=(self.prefix_cache, seq, self.eos_ids, lambda: self._count(-1)),
            ).start()
        else:
            with self._lock:
                self._incoming.append(seq)
                self._lock.notify()
        return stream

    def _reuses_prefix(self, seq: _Sequence) -> bool:
        """Serve on a kept generator (prefix_cache.py) when it reuses a prefix, or when this is the
        only request in flight (a single chat: build the state its next turn extends). Under
        concurrent load, requests without a reusable prefix go to the Engine, which batches."""
        if not self.prefix_cache.accepts(seq.params):
            return False
        return self._inflight <= 1 or self.prefix_cache.reusable(seq.prompt, seq.params) > 0

    def _needs_generator(self, params: GenerationParams) -> bool:
        seeded = params.seed is not None and params.temperature > 0
        masks_logits = bool(params.min_tokens or params.ignore_eos or params.guidance)
        return not self._engine_usable or seeded or (masks_logits and not self._engine_masks_logits)

    def _forget(self, seq: _Sequence) -> None:
        with self._lock:
            self._live.discard(seq)

    def _count(self, delta: int) -> None:
        with self._count_lock:
            self._inflight += delta

    def cancel(self, seq: _Sequence) -> None:
        with self._lock:
            seq.cancelled = True
            self._cancels.append(seq)
            self._lock.notify()
        if self._scheduler is not None:
            self._scheduler.wake()

    def close(self) -> None:
        """Stop generating; every running or waiting request ends with 'cancelled'.

        On og.Generator paths each sequence is marked cancelled (its thread ends it before the
        next token: issue 12 found unload(force=true) left them running to the end).
        """
        with self._lock:
            self._closed = True
            for seq in self._live:
                seq.cancelled = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._scheduler is not None:
            self._scheduler.close()
        self.prefix_cache.clear()

    # --- the step loop (engine thread) ------------------------------------------------
    def _step_loop(self, ready: list[BaseException | None], started: threading.Event) -> None:
        # "Engine operations must be called from the Engine owner thread" (0.18.0).
        try:
            if self.batching == "engine":
                self._new_engine()
            self._choose_paths()
            ready.append(None)
        except Exception as exc:
            ready.append(exc)
            return
        finally:
            started.set()
        while True:
            with self._lock:
                while not (self._incoming or self._cancels or self._running or self._closed):
                    self._lock.wait()
                incoming, self._incoming = self._incoming, []
                cancels, self._cancels = self._cancels, []
                closed = self._closed
            for seq in incoming:
                self._begin(seq)
            for seq in [*cancels, *(self._running.values() if closed else ())]:
                if seq.request is not None and not seq.finished:
                    seq.request.cancel_turn(seq.turn_id)
            if not self._running:
                if closed:
                    return
                continue
            try:
                self._engine.run(self._buffer)
            except Exception as exc:
                self._restart(GenerationFailed(f"generation failed in the engine: {exc}"))
                continue
            failed = False
            for i in range(len(self._buffer)):
                failed = self._dispatch(self._buffer[i]) or failed
            if failed:
                codes = {seq.error_code for seq in self._running.values() if seq.error_code}
                self._restart(
                    GenerationFailed(f"generation failed in the engine ({', '.join(codes)})")
                )

    def _restart(self, error: FoundryError) -> None:
        """After a failed step the static Engine is "no longer healthy": retry or fail its work."""
        log.error("engine for %s failed; restarting it: %s", self.model_id, error.message)
        retry = []
        for seq in list(self._running.values()):
            if (
                seq.completion_tokens == 0 and not seq.retried
            ):  # nothing sent yet: run it again once
                self._running.pop(id(seq.request), None)
                seq.retried, seq.request = True, None
                retry.append(seq)
            else:
                self._end(seq, error=error)
        self._new_engine()
        for seq in retry:
            self._begin(seq)

    def _new_engine(self) -> None:
        self._engine = og.Engine(self._model)
        self._buffer = self._engine.create_event_buffer(4 * self.max_batch)

    def _probe(self, prompt_length: int, min_tokens: int) -> bool:
        """Whether a 2-token greedy turn runs on this artifact's Engine (a fresh one after)."""
        request = self._engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(2)
        if min_tokens:
            options.set_min_generated_tokens(min_tokens)
        options.set_do_sample(False)
        ok = False
        try:
            request.begin_turn(np.arange(1, 1 + prompt_length, dtype=np.int32), options)
            while self._engine.has_pending_requests():
                self._engine.run(self._buffer)
                for i in range(len(self._buffer)):
                    event = self._buffer[i]
                    if int(event.flags) & int(og.EngineEventFlags.TURN_FINISHED):
                        ok = event.finish_reason == og.FinishReason.MAX_GENERATED_TOKENS
        except Exception:
            ok = False
        self._new_engine()
        return ok

    def _choose_paths(self) -> None:
        """Which requests the Engine serves on this artifact (none unless batching="engine").

        Measured (0.18.0, CPU) on artifacts built with `prune_lm_head` (logits [batch, 1, vocab],
        the compiler's default for chat recipes): the static Engine fails a multi-token
        prefill ("Got invalid dimensions for output: logits ... Got: 80 Expected: 1"), also
        after an og.Generator ran on the same model, and is then "no longer healthy". The
        Generator handles those artifacts correctly, so they use it for every request. On
        full-logits artifacts the Engine serves everything but seeded sampling.
        """
        pruned = _prunes_lm_head(self.path)
        wanted = self.batching == "engine"
        self._engine_usable = wanted and not pruned and self._probe(16, 0)
        self._engine_masks_logits = self._engine_usable and self._probe(3, 2)
        if wanted and not self._engine_usable:
            log.info(
                "%s: og.Engine cannot serve this artifact (pruned LM head); using og.Generator",
                self.model_id,
            )

    def _begin(self, seq: _Sequence) -> None:
        if seq.cancelled:
            seq.finish("cancelled")
            self._count(-1)
            return
        try:
            request = self._engine.create_request()
            seq.turn_id = request.begin_turn(
                np.asarray(seq.prompt, dtype=np.int32), _turn_options(request, seq.params)
            )
        except Exception as exc:
            error = (
                InvalidRequest(
                    f"the request was refused by the engine: {exc}", param="response_format"
                )
                if seq.params.guidance
                else GenerationFailed(f"generation failed to start: {exc}")
            )
            seq.fail(error)
            self._count(-1)
            return
        seq.request = request
        self._running[id(request)] = seq

    def _dispatch(self, event: Any) -> bool:
        """Hand one event to its sequence; True when the engine reported a failure."""
        seq = self._running.get(id(event.request))
        if seq is None:
            return bool(int(event.flags) & int(og.EngineEventFlags.FAILED))
        flags = int(event.flags)
        if flags & int(og.EngineEventFlags.TOKEN) and event.finish_reason != og.FinishReason.EOS:
            seq.push_token(int(event.token))
            if seq.stops.stopped and not seq.finished:
                seq.request.cancel_turn(seq.turn_id)
        if flags & int(og.EngineEventFlags.TURN_FINISHED):
            usage = event.usage
            if usage is not None:
                seq.cached_tokens = int(usage.cached_prompt_tokens)
            if (
                flags & int(og.EngineEventFlags.FAILED)
                or event.finish_reason == og.FinishReason.FAILED
            ):
                seq.error_code = str(event.error_code)
                return True  # _restart retries or fails it
            self._end(seq, reason=_FINISH.get(event.finish_reason, "stop"))
        return False

    def _end(
        self, seq: _Sequence, *, reason: str = "stop", error: FoundryError | None = None
    ) -> None:
        self._running.pop(id(seq.request), None)
        self._count(-1)
        if error is not None:
            seq.fail(error)
        else:
            seq.finish("stop" if seq.stops.stopped else reason)
        try:
            seq.request.close()
        except Exception:  # closing a finished request must not take the loop down
            log.debug("closing request failed", exc_info=True)


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
        self.request: Any = None
        self.turn_id = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.cancelled = False
        self.finished = False
        self.retried = False
        self.error_code = ""

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
            seq.finish("cancelled")
            self.engine._count(-1)
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
            seq.fail(exc)
        except Exception as exc:
            seq.fail(GenerationFailed(f"generation failed: {exc}"))
        else:
            if seq.cancelled:
                seq.finish("cancelled")
            elif seq.stops.stopped or seq.completion_tokens < params.max_tokens:
                seq.finish("stop")
            else:
                seq.finish("length")
        finally:
            self.engine._count(-1)

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
    import msgspec

    max_tokens = min(params.max_tokens, room)
    return msgspec.structs.replace(
        params, max_tokens=max_tokens, min_tokens=min(params.min_tokens, max_tokens)
    )


def _turn_options(request: Any, params: GenerationParams) -> Any:
    options = og.TurnOptions(request)
    options.set_max_generated_tokens(params.max_tokens)
    minimum = params.max_tokens if params.ignore_eos else params.min_tokens
    if minimum:
        options.set_min_generated_tokens(minimum)
    if params.temperature <= 0:
        options.set_do_sample(False)
    else:
        options.set_do_sample(True)
        options.set_temperature(params.temperature)
        options.set_top_p(params.top_p)
        options.set_top_k(params.top_k)
    if params.guidance:
        options.set_guidance(*params.guidance)
    return options


def _prunes_lm_head(artifact: Path) -> bool:
    """Whether build.json records the builder's `prune_lm_head` (logits of the last token only)."""
    try:
        build = json.loads((artifact / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return '"prune_lm_head": true' in json.dumps(build)
