"""Named points where a process may be killed on purpose, for the crash-consistency tests.

`FOUNDRY_KILL_AT=NAME` (or `NAME:N`, the N-th time the point is reached) makes the process
SIGKILL itself when it reaches `kill_point("NAME")`: the same death as the OOM killer or a
pulled plug minus the disk cache, at a moment the test chooses rather than one a sleep
guesses. Unset (always, outside the tests), a point costs one dict lookup. The idea is
etcd's gofail and SQLite's crash tests, reduced to what a kill -9 matrix needs.
"""

from __future__ import annotations

import os
import signal

__all__ = ["KILL_POINTS", "kill_point"]

ENV = "FOUNDRY_KILL_AT"

# Every point the code defines, so a test can check it names one that exists.
KILL_POINTS: dict[str, str] = {
    "store.blob": "a blob written and fsynced under tmp/, not yet renamed into blobs/",
    "store.register.blobs": "every blob of a registration stored, no manifest yet",
    "store.register.manifest": "manifest written, no build key or ref yet",
    "store.commit_blob": "a received blob (registry pull, bundle) renamed into blobs/, no manifest",
    "store.snapshot": "snapshot links made under tmp/, not yet renamed into snapshots/",
    "store.gc.snapshot": "gc has moved a snapshot folder out of snapshots/, not yet deleted it",
    "store.gc": "gc has deleted one snapshot, manifest or blob of its plan",
    "download.bytes": "a download has written one more chunk into its .partial file",
    "download.fetched": "every file of a download fetched and verified, not yet validated",
    "build.packed": "a build's artifact packed in staging, not yet registered",
    "oci.blob": "a registry pull has written one more chunk of a blob under tmp/",
}

_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process if `FOUNDRY_KILL_AT` names this point (and its count is reached)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
