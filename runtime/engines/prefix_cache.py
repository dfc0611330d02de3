"""Prefix reuse across chat turns: kept `og.Generator`s whose KV cache a new prompt can extend.

A chat grows turn by turn and every request resends the whole conversation. When a new
prompt's tokens start with tokens a kept generator has already processed, we rewind that
generator to the common prefix (`Generator.rewind_to`) and append only the rest, instead of
prefilling everything again. Kept generators live in an LRU bounded in bytes of KV cache;
a lease takes one out exclusively, and it comes back (most recent) when the turn ends.

Why generators and not the Engine's own turns (measured with onnxruntime-genai 0.18.0 on CPU):
* Without paged attention (a CUDA-only build option) the Engine runs a static batch and keeps
  the KV state of only the requests in the last batch: after any other request runs,
  `Request.begin_turn` on an older one fails with "model state is no longer resident".
* `Request.rewind_to_start_of_turn` rewinds only to turn boundaries, so a prompt that
  diverges inside the previous reply (a client that edits it, or a reply whose text
  re-tokenizes differently) loses everything back to the start of that turn.
* `Generator.rewind_to(n)` rewinds to any token, each generator owns its KV cache, and its
  greedy tokens equal the Engine's (checked on 5 random prompts of 35-600 tokens), and a
  rewound-and-extended generator gives the same logits as a cold one (within 1e-6, fp32) and
  the same tokens (tests/test_prefix_reuse.py) -- provided only rows that a prefill computed,
  in aligned pairs, are reused (ROW_ALIGNMENT): the KV of generated tokens is recomputed.

Limits: search options (sampling, `min_length`, `random_seed`, guidance) are fixed when a
generator is made, so only requests without guidance, seed or min/ignore-EOS are served here,
and only by a generator made with the same sampling options. The caller (ChatEngine) sends
everything else to the Engine.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime_genai as og

from runtime.engines.base import GenerationParams
from runtime.engines.gil import append_in_chunks, let_the_loop_run
from runtime.errors import GenerationFailed

__all__ = ["DEFAULT_BUDGET_BYTES", "Lease", "PrefixCache", "common_prefix", "kv_bytes_per_token"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 512 * 1024 * 1024
BUDGET_ENV = "FOUNDRY_PREFIX_CACHE_MB"  # 0 turns prefix reuse off
HEADROOM_TOKENS = 2048  # room a kept generator leaves for the turns that follow
# int4 (MatMulNBits) prefill computes rows in pairs; an odd row left over takes another kernel
# whose results differ (0.14 in the logits of a 0.5B model). Measured: splitting a 1,274-token
# prefill at any even offset gave logits identical to one pass (0.0 difference), at any odd
# offset 0.13-0.15 off; a token generated one at a time is such a lone row. So reuse covers
# only rows a prefill computed in pairs from an even start, and resumes at an even offset.
ROW_ALIGNMENT = 2


def kv_bytes_per_token(artifact: Path) -> int:
    """KV-cache bytes one token costs in this artifact (keys + values, every layer)."""
    genai = json.loads((artifact / "genai_config.json").read_text(encoding="utf-8"))
    decoder = genai["model"]["decoder"]
    heads = int(decoder.get("num_key_value_heads") or decoder["num_attention_heads"])
    width = 2 if "fp16" in json.dumps(decoder.get("session_options", {})).lower() else 4
    return 2 * int(decoder["num_hidden_layers"]) * heads * int(decoder["head_size"]) * width


def budget_from_env() -> int:
    """The byte budget: `FOUNDRY_PREFIX_CACHE_MB` if set (0 = off), else 512 MiB."""
    value = os.environ.get(BUDGET_ENV)
    if value is None or not value.strip():
        return DEFAULT_BUDGET_BYTES
    try:
        return max(0, int(float(value) * 1024 * 1024))
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", BUDGET_ENV, value)
        return DEFAULT_BUDGET_BYTES


@dataclass
class _Entry:
    generator: Any
    tokens: list[int]  # what its KV holds (the last one may still be pending)
    key: tuple
    max_length: int
    clean: int  # leading tokens whose KV equals a cold prefill's (see ROW_ALIGNMENT)


@dataclass
class Lease:
    """A generator ready to generate after `prompt`: `cached_tokens` of it were reused."""

    generator: Any
    key: tuple
    max_length: int
    cached_tokens: int
    prompt_tokens: int = 0


def _options_key(params: GenerationParams) -> tuple:
    if params.temperature <= 0:
        return ("greedy",)
    return ("sample", params.temperature, params.top_p, params.top_k)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    limit = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:limit]) != np.asarray(b[:limit]))
    return int(diff[0]) if len(diff) else limit


class PrefixCache:
    """An LRU of kept generators for one model, bounded by `budget_bytes` of KV cache."""

    def __init__(
        self,
        model: Any,
        *,
        bytes_per_token: int,
        context_length: int,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        vocab_size: int = 0,
        headroom: int = HEADROOM_TOKENS,
    ):
        self.model = model
        self.bytes_per_token = bytes_per_token
        self.context_length = context_length
        self.budget_bytes = budget_bytes
        self.vocab_size = vocab_size
        self.headroom = headroom
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # LRU first

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def accepts(self, params: GenerationParams) -> bool:
        """Whether a kept generator can serve these params (see the module docstring)."""
        return (
            self.enabled
            and params.guidance is None
            and params.seed is None
            and params.min_tokens == 0
            and not params.ignore_eos
        )

    def kept_bytes(self) -> int:
        with self._lock:
            return sum(e.max_length * self.bytes_per_token for e in self._entries.values())

    def reusable(self, prompt: list[int], params: GenerationParams) -> int:
        """How many prompt tokens a lease would reuse right now (0: a cold start)."""
        with self._lock:
            found = self._best(prompt, params)
        return found[1] if found else 0

    def lease(self, prompt: list[int], params: GenerationParams) -> Lease:
        """A generator positioned after `prompt`'s reusable prefix, the rest appended.

        Takes the kept generator with the longest common prefix out of the cache (or makes
        a fresh one), rewinds it to that prefix (keeping at least one prompt token to run,
        which yields the next logits) and appends the remainder of the prompt.
        """
        key = _options_key(params)
        with self._lock:
            found = self._best(prompt, params)
            entry = self._entries.pop(found[0]) if found else None
        reused = found[1] if found else 0
        if entry is None:
            max_length = min(self.context_length, len(prompt) + params.max_tokens + self.headroom)
            generator, reused = self._fresh(params, max_length), 0
        else:
            generator, max_length = entry.generator, entry.max_length
            generator.rewind_to(reused)
        append_in_chunks(generator, np.asarray(prompt[reused:], dtype=np.int32), lambda: False)
        return Lease(generator, key, max_length, reused, len(prompt))

    def give_back(self, lease: Lease) -> None:
        """Keep the leased generator (most recent) unless it is full; evict past the budget."""
        tokens = [int(t) for t in lease.generator.get_sequence(0)]
        if len(tokens) + 2 >= lease.max_length or not self.enabled:
            return
        clean = lease.prompt_tokens - lease.prompt_tokens % ROW_ALIGNMENT
        entry = _Entry(lease.generator, tokens, lease.key, lease.max_length, clean)
        with self._lock:
            self._entries[id(lease.generator)] = entry
            while self._entries and self._kept_bytes_locked() > self.budget_bytes:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _kept_bytes_locked(self) -> int:
        return sum(e.max_length * self.bytes_per_token for e in self._entries.values())

    def _best(self, prompt: list[int], params: GenerationParams) -> tuple[int, int] | None:
        key, best = _options_key(params), None
        for entry_id, entry in self._entries.items():
            if entry.key != key or entry.max_length < len(prompt) + params.max_tokens:
                continue
            # Only rows a prefill computed (never generated ones, never an odd leftover row),
            # and at least one prompt token left to run; then down to an even offset.
            reusable = min(common_prefix(entry.tokens, prompt), len(prompt) - 1, entry.clean)
            reusable -= reusable % ROW_ALIGNMENT
            if reusable > 0 and (best is None or reusable > best[1]):
                best = (entry_id, reusable)
        return best

    def _fresh(self, params: GenerationParams, max_length: int) -> Any:
        options: dict[str, Any] = {"max_length": max_length, "past_present_share_buffer": True}
        if params.temperature <= 0:
            options["do_sample"] = False
        else:
            options.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k or self.vocab_size or 0,
            )
        generator_params = og.GeneratorParams(self.model)
        generator_params.set_search_options(**options)
        return og.Generator(self.model, generator_params)


def run_with_reuse(cache: PrefixCache, seq: Any, eos_ids: set[int], on_done: Any) -> None:
    """Generate `seq` (ChatEngine's `_Sequence`) on a leased generator; runs on its own thread.

    `seq` supplies prompt, params, push_token/finish/fail, `cancelled` and `stops.stopped`;
    `on_done()` (the engine's in-flight count) runs exactly once, and before the last chunk is
    delivered, as does giving the generator back: a client that sends its next turn the moment
    this one ends must find the state kept and the engine idle.
    """
    lease, reason, error = None, "stop", None
    try:
        lease = cache.lease(seq.prompt, seq.params)
        seq.cached_tokens = lease.cached_tokens
        generator, produced = lease.generator, 0
        while (
            produced < seq.params.max_tokens
            and not generator.is_done()
            and not seq.cancelled
            and not seq.stops.stopped
        ):
            generator.generate_next_token()
            produced += 1
            token = int(generator.get_next_tokens()[0])
            if token in eos_ids:
                break  # EOS is not text
            seq.push_token(token)
            let_the_loop_run(first_token=produced == 1)
        if seq.cancelled:
            reason = "cancelled"
        elif not seq.stops.stopped and produced >= seq.params.max_tokens:
            reason = "length"
    except Exception as exc:
        lease = None  # its state is unknown: do not keep it
        error = GenerationFailed(f"generation failed: {exc}")
    if lease is not None:
        try:
            cache.give_back(lease)
        except Exception:  # keeping a generator is an optimisation, never a failure
            log.debug("could not keep a generator for reuse", exc_info=True)
    on_done()
    if error is not None:
        seq.fail(error)
    else:
        seq.finish(reason)
