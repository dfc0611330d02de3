"""Stored Responses API objects under `$FOUNDRY_HOME/responses/`, so `previous_response_id`
continues a conversation across service restarts.

    $FOUNDRY_HOME/responses/
      resp_<32 hex>.json     one StoredResponse (the Response, its input items, the conversation)
      .tmp/                  staging for atomic writes; anything here is garbage after a crash

Each record carries the whole conversation that led to it, so continuing needs one read and
an evicted ancestor never breaks a chain; every write prunes (`prune`). Never imports heavy modules.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import msgspec

from runtime.errors import ResponseNotFound
from runtime.settings import foundry_home
from runtime.store.atomic import atomic_write

__all__ = ["ResponsesStore", "StoredResponse"]

log = logging.getLogger(__name__)

_ID = re.compile(r"^resp_[0-9a-f]{32}$")


def _not_found(response_id: str, why: str = "was not found") -> ResponseNotFound:
    return ResponseNotFound(f"response {response_id!r} {why}", param="response_id")


class StoredResponse(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    created_at: float
    response: dict  # the Response object as the API returned it
    input_items: list[dict]  # this request's input, as `input_items` lists it
    conversation: list[dict]  # chat messages so far (no instructions), the reply included


class ResponsesStore:
    """Atomic, bounded, restart-proof storage of Response objects."""

    def __init__(
        self, root: Path | None = None, *, max_count: int = 1000, max_age: float = 30 * 86400.0
    ):
        self.root = root if root is not None else foundry_home() / "responses"
        self.max_count = max_count
        self.max_age = max_age

    def _path(self, response_id: str) -> Path:
        """The record's file; an id off the grammar is simply not found (never a path)."""
        if not isinstance(response_id, str) or not _ID.fullmatch(response_id):
            raise _not_found(response_id)
        return self.root / f"{response_id}.json"

    def put(self, record: StoredResponse) -> None:
        """Write `record` atomically, then prune old and surplus records."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path(record.id), msgspec.json.encode(record), self.root / ".tmp")
        self.prune()

    def get(self, response_id: str) -> StoredResponse:
        """Raises: ResponseNotFound: unknown, deleted, expired or unreadable."""
        path = self._path(response_id)
        try:
            record = msgspec.json.decode(path.read_bytes(), type=StoredResponse)
        except (FileNotFoundError, msgspec.DecodeError) as exc:
            raise _not_found(response_id) from exc
        if time.time() - record.created_at > self.max_age:
            path.unlink(missing_ok=True)
            raise _not_found(response_id, "has expired")
        return record

    def delete(self, response_id: str) -> None:
        """Raises: ResponseNotFound: nothing to delete."""
        try:
            self._path(response_id).unlink()
        except FileNotFoundError as exc:
            raise _not_found(response_id) from exc

    def prune(self) -> None:
        """Drop records past `max_age`, then the oldest past `max_count`."""
        entries = []
        for path in self.root.glob("resp_*.json"):
            try:
                entries.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue
        entries.sort()
        cutoff = time.time() - self.max_age
        doomed = [path for mtime, path in entries if mtime < cutoff]
        kept = [path for mtime, path in entries if mtime >= cutoff]
        doomed += kept[: max(0, len(kept) - self.max_count)]
        for path in doomed:
            path.unlink(missing_ok=True)
        if doomed:
            log.info("pruned %d stored responses", len(doomed))
