"""An aggregate's sums over the events, read by two threads: each its own connection, both in
one snapshot, pulling a few days at a time.

Most aggregates read the rollups or the visits. Those that must read every event of the range
(`queries.reads_events`: a path condition on a visit dimension, a referrer, a conversion type...)
are bound by one core's SQLite: 5.5 s for `sources` under a path condition on 9.9M page views.
Every metric is a sum over days, so two connections can read the days between them and their
sums add up: 2.6 s on two cores. SQLite runs each query with the GIL released.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta

from sealexports.exports.filters import slow_regex_is_bad_input
from sealexports.exports.queries import Query, given_sums, reads_events, regex_per_value, sums_query
from sealexports.exports.request import ExportRequest
from sealexports.storage import deadline as deadlines
from sealexports.storage.database import begin_reading, connect, database_file, same_snapshot

# Day ranges a request is cut into: small enough that the two threads end within a range of
# each other, few enough that a ten-year range pays little per range (four queries each).
RANGES = 32
_TRIES = 3  # to start both snapshots with no write in between


def summed(conn: sqlite3.Connection, req: ExportRequest) -> Query | None:
    """The request's sums (as `queries.given_sums`) read by two threads, or None where one
    query does as well: the sums do not read the events, the range is one day, a regex runs in
    Python on each value of a field (two threads wait for each other's turn: 10.4 s instead of
    9.0 s), `conn` is in a transaction of its caller's, or its database is not a file; and
    None if writes kept landing between the two snapshots' starts (then one query reads one)."""
    if req.days < 2 or not reads_events(req) or regex_per_value(req) or conn.in_transaction:
        return None
    path = database_file(conn)
    if not path:
        return None
    helper = connect(path, migrate=False)
    try:
        if not _same_snapshot(conn, helper):
            return None
        try:
            return given_sums(_read(conn, helper, req))
        finally:
            helper.commit()
            conn.commit()
    finally:
        helper.close()


def _same_snapshot(conn: sqlite3.Connection, helper: sqlite3.Connection) -> bool:
    """Begin a read transaction on both that sees the same rows (`database.same_snapshot`)."""
    for _ in range(_TRIES):
        if same_snapshot(conn, lambda: begin_reading(helper)):
            return True
        helper.commit()
    return False


def _read(conn: sqlite3.Connection, helper: sqlite3.Connection, req: ExportRequest) -> list[list[object]]:
    """The sums of every day range, read by this thread on `conn` and a second one on `helper`."""
    ranges = _Ranges(req)
    deadline = deadlines.current() or deadlines.Deadline(math.inf, "")
    stop = threading.Event()
    theirs: dict[object, list[int]] = {}
    failed: list[BaseException] = []

    def help_out() -> None:
        try:
            with deadline.helping(helper, stop), slow_regex_is_bad_input():
                _add(helper, ranges, theirs)
        except BaseException as e:  # raised again by the caller's thread
            failed.append(e)

    thread = threading.Thread(target=help_out, name="sealexports-sums", daemon=True)
    thread.start()
    ours: dict[object, list[int]] = {}
    try:
        _add(conn, ranges, ours)
    except BaseException:
        stop.set()
        raise
    finally:
        thread.join()
    if failed:
        if isinstance(failed[0], sqlite3.OperationalError) and "interrupted" in str(failed[0]):
            deadline.check()  # the deadline's own error, as on `conn`
        raise failed[0]
    for k, sums in theirs.items():
        _merge(ours, k, sums)
    return [[k, *sums] for k, sums in ours.items()]


class _Ranges:
    """The request cut into day ranges, handed out one at a time to either thread."""

    def __init__(self, req: ExportRequest) -> None:
        step = -(-req.days // RANGES)
        self._parts = iter(
            replace(req, date_from=first, date_to=min(first + timedelta(days=step - 1), req.date_to))
            for first in _days(req.date_from, req.date_to, step)
        )
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[ExportRequest]:
        while True:
            with self._lock:
                part = next(self._parts, None)
            if part is None:
                return
            yield part


def _days(first: date, last: date, step: int) -> Iterator[date]:
    while first <= last:
        yield first
        first += timedelta(days=step)


def _add(conn: sqlite3.Connection, ranges: _Ranges, into: dict[object, list[int]]) -> None:
    for part in ranges:
        sql, params = sums_query(part)
        for k, *sums in conn.execute(sql, params):
            _merge(into, k, sums)


def _merge(into: dict[object, list[int]], k: object, sums: list[int]) -> None:
    total = into.get(k)
    if total is None:
        into[k] = sums
    else:
        for i, s in enumerate(sums):
            total[i] += s
