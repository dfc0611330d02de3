"""The detached service's log file, rotated while the service runs.

A service that ran for weeks must not grow its log without bound, so the service owns it:
one previous file (`.1`) is kept, and after each rollover fds 1 and 2 point at the new file
too, so what bypasses `logging` (a traceback, a C library's stderr) lands in the current log.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

__all__ = ["LOG_FORMAT", "ServiceLog"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ServiceLog(RotatingFileHandler):
    """Rotate at `max_bytes`, keeping one previous file; fds 1 and 2 follow the current file."""

    def __init__(self, path: Path, max_bytes: int):
        super().__init__(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8")
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self._follow()

    def doRollover(self) -> None:
        super().doRollover()
        self._follow()

    def _follow(self) -> None:
        if self.stream is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.stream.fileno(), 1)
        os.dup2(self.stream.fileno(), 2)
