"""Deadlines for queries: SQLite's progress handler stops a connection's query once its time is
up, or as soon as someone asks it to stop (a client that hung up, a service shutting down).

A query stopped this way raises `QueryTimeout` or `Interrupted` instead of SQLite's bare
`OperationalError: interrupted`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sealexports.errors import Interrupted, QueryTimeout

# SQLite VM instructions between two checks: coarse, so that a raw export's tight loop pays
# nothing measurable (one Python call per 10,000 instructions), fine enough to stop within
# milliseconds. A slow user function (a regexp) counts as one instruction: the regex timeout
# bounds it.
PROGRESS_STEPS = 10_000
_current = threading.local()


class Deadline:
    """`seconds` of running time for the queries run under `running()`, whose times add up
    (the time between two `running()`, e.g. a stream waiting for its client, does not count).
    `stop` (this request's: its client hung up) or `shutdown` (the service's), set from any
    thread, stop them at once."""

    def __init__(
        self,
        seconds: float,
        timeout_message: str,
        stop: threading.Event | None = None,
        shutdown: threading.Event | None = None,
    ) -> None:
        self.seconds = seconds
        self.timeout_message = timeout_message
        self.stop = stop or threading.Event()
        self.shutdown = shutdown or threading.Event()
        self.used = 0.0
        self._started: float | None = None

    def expired(self) -> bool:
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self.used + running > self.seconds

    def check(self) -> None:
        """Raise if stopped or past the deadline (for work between queries)."""
        if self.shutdown.is_set():
            raise Interrupted("the service is stopping; try again in a moment")
        if self.stop.is_set():
            raise Interrupted("the request was stopped: its client hung up")
        if self.expired():
            raise QueryTimeout(self.timeout_message)

    def _progress(self) -> int:
        return 1 if self.stop.is_set() or self.shutdown.is_set() or self.expired() else 0

    @contextmanager
    def running(self, conn: sqlite3.Connection) -> Iterator[None]:
        """Queries on `conn` inside this block stop at the deadline or when `stop` is set."""
        self._started = time.monotonic()
        conn.set_progress_handler(self._progress, PROGRESS_STEPS)
        outer, _current.deadline = current(), self
        try:
            self.check()
            yield
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                self.check()
            raise
        finally:
            _current.deadline = outer
            conn.set_progress_handler(None, 0)
            self.used += time.monotonic() - self._started
            self._started = None

    @contextmanager
    def helping(self, conn: sqlite3.Connection, stop: threading.Event) -> Iterator[None]:
        """Queries on `conn`, run by another thread for the block under `running`, stop with them
        (its time is that block's), or when `stop` is set."""

        def progress() -> int:
            return 1 if stop.is_set() else self._progress()

        conn.set_progress_handler(progress, PROGRESS_STEPS)
        try:
            yield
        finally:
            conn.set_progress_handler(None, 0)


def current() -> Deadline | None:
    """The deadline whose `running` block this thread is in, if any."""
    deadline: Deadline | None = getattr(_current, "deadline", None)
    return deadline
