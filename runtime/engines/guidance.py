"""Grammar token masks for the batch scheduler: llguidance, the library onnxruntime-genai uses.

onnxruntime-genai 0.18 hands a turn's guidance ("json_schema" | "lark_grammar" | "regex", text)
to llguidance; the scheduler (batch.py) runs onnxruntime itself, so it does the same here: one
`LLTokenizer` per loaded model (built once from tokenizer.json), one `LLMatcher` per guided
sequence, and before each sampled token the matcher's bitmask sets every token it refuses to
-inf. The grammar is compiled at submit time, so a grammar llguidance refuses is the request's
400 before any byte is sent. Imports llguidance only when a guided request comes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engines.base import Guidance
from runtime.errors import InvalidRequest

__all__ = ["GrammarMask", "Guide"]

_KINDS = {
    "json_schema": "grammar_from_json_schema",
    "lark_grammar": "grammar_from_lark",
    "regex": "grammar_from_regex",
}


class Guide:
    """One model's tokenizer for llguidance, built on the first guided request."""

    def __init__(self, tokenizer_json: Path, vocab_size: int, eos_ids: set[int]):
        self._path = tokenizer_json
        self._vocab_size = vocab_size
        self._eos_ids = sorted(eos_ids)
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def mask(self, guidance: Guidance) -> GrammarMask:
        """A fresh matcher for `guidance`.

        Raises:
            InvalidRequest: an unknown kind, or a grammar llguidance cannot compile.
        """
        import llguidance

        kind, text = guidance
        if kind not in _KINDS:
            raise InvalidRequest(f"unknown guidance kind {kind!r}", param="response_format")
        try:
            grammar = getattr(llguidance.LLMatcher, _KINDS[kind])(text)
        except Exception as exc:  # llguidance raises ValueError/RuntimeError with the reason
            raise InvalidRequest(
                f"the grammar was refused: {exc}", param="response_format"
            ) from None
        matcher = llguidance.LLMatcher(self._llg_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(
                f"the grammar cannot be compiled: {matcher.get_error()}", param="response_format"
            )
        return GrammarMask(matcher, self._vocab_size)

    def _llg_tokenizer(self) -> Any:
        import llguidance

        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.LLTokenizer(
                    str(self._path), n_vocab=self._vocab_size, eos_token=self._eos_ids
                )
            return self._tokenizer


class GrammarMask:
    """One guided sequence: which tokens its grammar allows next, and what it has consumed."""

    def __init__(self, matcher: Any, vocab_size: int):
        self._matcher = matcher
        self._bits = np.full((vocab_size + 31) // 32, -1, dtype=np.int32)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every token the grammar refuses set to -inf (a copy)."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: len(logits)]
        masked = np.where(allowed.astype(bool), logits, -np.inf)
        return masked.astype(logits.dtype, copy=False)

    def consume(self, token: int) -> bool:
        """Advance past `token`; False when the grammar is finished (stop) or broken."""
        self._matcher.consume_token(token)
        return not (self._matcher.is_stopped() or self._matcher.is_error())

    @property
    def finished(self) -> bool:
        return bool(self._matcher.is_stopped())
