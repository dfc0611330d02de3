"""Token ids -> text deltas, and stop strings that never leak.

`IncrementalDecoder` follows vLLM's `detokenize_incrementally`: decode a short window of
ids and emit only text that is stable, holding back a trailing U+FFFD (a multi-byte
character split across tokens). `StopMatcher` holds back any suffix that could still grow
into a stop string, so a stop split across two chunks never reaches the client. Both are
pure Python and used by every generation path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["IncrementalDecoder", "StopMatcher"]

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Feed ids one at a time; get back the text they add."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Whatever is still held back (a trailing partial character becomes U+FFFD)."""
        prefix_text = self._decode(self.ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.ids)
        return new_text[len(prefix_text) :]


class StopMatcher:
    """Cuts text at the first stop string; never releases a possible stop prefix early."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def push(self, text: str, *, check: bool = True) -> str:
        """Add text; return what is safe to emit. After a match, `stopped` is True."""
        if self.stopped:
            return ""
        self._pending += text
        if not self.stops:
            out, self._pending = self._pending, ""
            return out
        if check:
            cut = min((i for s in self.stops if (i := self._pending.find(s)) >= 0), default=-1)
            if cut >= 0:
                self.stopped = True
                out, self._pending = self._pending[:cut], ""
                return out
        keep = self._held_suffix()
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out

    def _held_suffix(self) -> int:
        """Length of the longest suffix of pending text that is a proper prefix of a stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
