"""Prefix reuse in the batch: a finished sequence's prompt KV kept for the next turn.

A chat's next turn starts with the whole previous prompt (system, history, the last user
message), so when a sequence leaves the batch its prompt's keys and values are copied out of
its buffer row (one array per layer, [kv heads, tokens, head size]) and kept here, newest
first, within a byte budget (`FOUNDRY_PREFIX_CACHE_MB`, 0 = off). A new sequence takes the
entry sharing the longest prefix with its prompt; that many tokens are copied into its row and
only the rest is prefilled.

Only rows a prefill computed are kept, cut to an even length (prefix_cache.ROW_ALIGNMENT):
int4's MatMulNBits computes prefill rows in pairs and a lone row (a generated token, an odd
last row) with another kernel, so reusing those would change the next turn's greedy tokens.
The KV of a token depends on the tokens alone, not on sampling, so seeded and guided requests
reuse as well as greedy ones.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from runtime.engines.base import GenerationParams
from runtime.engines.prefix_cache import ROW_ALIGNMENT, budget_from_env, common_prefix

__all__ = ["KeptPrefixes"]


class KeptPrefixes:
    """Kept prompt KV, least recently used dropped first past `budget_bytes`."""

    headroom = 0  # an entry holds exactly its tokens (og's kept generators reserved more)

    def __init__(self, bytes_per_token: int, context_length: int, budget_bytes: int | None = None):
        self.bytes_per_token = bytes_per_token
        self.context_length = context_length
        self.budget_bytes = budget_from_env() if budget_bytes is None else budget_bytes
        self._entries: OrderedDict[int, tuple[list[int], list[np.ndarray]]] = OrderedDict()
        self._next = 0
        self._lock = threading.Lock()

    def accepts(self, params: GenerationParams) -> bool:
        """Every request may reuse (KV does not depend on sampling) while the budget allows."""
        return self.budget_bytes > 0

    @staticmethod
    def keepable(prefilled: int) -> int:
        """How many of `prefilled` prompt rows may be kept: an even count."""
        return prefilled - prefilled % ROW_ALIGNMENT

    def keep(self, tokens: list[int], kv: list[np.ndarray]) -> None:
        """Keep `kv` (copies, one per layer and kind) for `tokens`; evict past the budget."""
        size = len(tokens) * self.bytes_per_token
        if not tokens or size > self.budget_bytes:
            return
        with self._lock:
            for key, (held, _) in list(self._entries.items()):
                if common_prefix(held, tokens) == len(held):  # the new one extends it
                    del self._entries[key]
            self._entries[self._next] = (tokens, kv)
            self._next += 1
            while self._kept_bytes_locked() > self.budget_bytes:
                self._entries.popitem(last=False)

    def reusable(self, prompt: list[int], params: GenerationParams | None = None) -> int:
        """Tokens of `prompt` a kept entry would give (at least one is left to compute)."""
        with self._lock:
            best = self._best(prompt)
        return best[1] if best else 0

    def take(self, prompt: list[int]) -> tuple[int, list[np.ndarray]] | None:
        """The longest kept prefix of `prompt` and its KV; the entry stays (least recent last)."""
        with self._lock:
            best = self._best(prompt)
            if best is None:
                return None
            key, length = best
            self._entries.move_to_end(key)
            return length, self._entries[key][1]

    def kept_bytes(self) -> int:
        with self._lock:
            return self._kept_bytes_locked()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _kept_bytes_locked(self) -> int:
        return sum(len(tokens) for tokens, _ in self._entries.values()) * self.bytes_per_token

    def _best(self, prompt: list[int]) -> tuple[int, int] | None:
        best: tuple[int, int] | None = None
        for key, (tokens, _) in self._entries.items():
            length = self.keepable(min(common_prefix(tokens, prompt), len(prompt) - 1))
            if length > 0 and (best is None or length > best[1]):
                best = (key, length)
        return best
