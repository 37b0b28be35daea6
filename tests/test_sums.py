"""Aggregates that read the events are summed by two threads (`exports.sums`): the same rows as
one query, in one snapshot, under the request's deadline. The rows themselves are checked
against the model in test_exports and test_export_filters (their demo database is a file, so
they go through here)."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sealexports.errors import QueryTimeout
from sealexports.exports import engine, sums
from sealexports.exports.queries import export_query, reads_events, regex_per_value
from sealexports.exports.request import ExportRequest, build_request
from sealexports.storage.database import connect
from sealexports.storage.deadline import Deadline
from tests.apps import SLOW_FILTERS, Template
from tests.conftest import DemoDB


def request(db: DemoDB, export_type: str, filters: dict[str, Any] | None, days: int = 0) -> ExportRequest:
    date_from = db.date_from if not days else db.date_to - timedelta(days=days - 1)
    return build_request(db.site.site_id, export_type, "json", str(date_from), str(db.date_to), filters)


EVENT_READING = [
    ("sources", {"advanced_filters": "path:contains:/blog/"}),
    ("pages", {"advanced_filters": "referrer:contains:google"}),
    ("time_series", {"conversion_type": "purchase"}),
    ("landing_pages", {"advanced_filters": "path:regex:^/products/,country:in:ES|MX"}),
    ("countries", {"content_grouping": "blog"}),
]


@pytest.mark.parametrize(("export_type", "filters"), EVENT_READING, ids=[t for t, _ in EVENT_READING])
def test_two_threads_give_the_rows_of_one_query(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str, filters: dict[str, Any]
) -> None:
    req = request(demo_db, export_type, filters)
    summed = sums.summed(demo_conn, req)
    assert summed is not None  # these are the requests the threads read
    assert not demo_conn.in_transaction  # both snapshots ended
    one_query = demo_conn.execute(*export_query(req)).fetchall()
    assert demo_conn.execute(*export_query(req, summed)).fetchall() == one_query
    assert len(one_query) > 1
    assert list(engine.rows(demo_conn, req)) == list(engine.rows(demo_conn, req))


@pytest.mark.parametrize(
    ("export_type", "filters", "days"),
    [
        ("sources", {"advanced_filters": "path:contains:/blog/"}, 1),  # one day: one query
        ("sources", None, 0),  # the rollups
        ("sources", {"country": "ES"}, 0),  # the visits
        ("pages", {"advanced_filters": "path:contains:/blog/"}, 0),  # the rollups' paths
        ("pages", {"advanced_filters": "referrer:regex:google"}, 0),  # a regex run on every referrer
        ("conversions", {"advanced_filters": "path:contains:/blog/"}, 0),  # raw events
    ],
)
def test_one_query_where_two_threads_do_not_help(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    export_type: str,
    filters: dict[str, Any] | None,
    days: int,
) -> None:
    assert sums.summed(demo_conn, request(demo_db, export_type, filters, days)) is None


def test_a_caller_s_transaction_is_left_alone(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    demo_conn.execute("BEGIN")
    demo_conn.execute("SELECT count(*) FROM visits").fetchall()
    req = request(demo_db, *EVENT_READING[0])
    assert sums.summed(demo_conn, req) is None
    assert demo_conn.in_transaction
    demo_conn.commit()


class _Racing(sqlite3.Connection):
    """A connection that lets another one commit a write just before each of its first `races`
    transactions begins: between the two snapshots `_same_snapshot` starts."""

    races = 0
    writer: sqlite3.Connection

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN" and self.races:
            type(self).races -= 1
            self.writer.execute("INSERT INTO meta VALUES (?, '')", [f"race {self.races}"])
        return super().execute(sql, *args)


@pytest.mark.parametrize(("races", "agreed"), [(0, True), (2, True), (3, False)])
def test_both_snapshots_start_with_no_write_between(
    demo_db: DemoDB, tmp_path: Path, races: int, agreed: bool
) -> None:
    path = tmp_path / "race.db"
    shutil.copy(demo_db.path, path)
    conn = connect(path, migrate=False)
    writer = connect(path, migrate=False)
    helper = sqlite3.connect(path, factory=_Racing, isolation_level=None)
    _Racing.writer, _Racing.races = writer, races
    try:
        assert sums._same_snapshot(conn, helper) is agreed  # three tries
        assert conn.in_transaction is agreed and helper.in_transaction is agreed
        if agreed:  # a write now is seen by neither
            before = conn.execute("SELECT count(*) FROM visits").fetchone()
            writer.execute("DELETE FROM visits WHERE id IN (SELECT id FROM visits LIMIT 10)")
            assert helper.execute("SELECT count(*) FROM visits").fetchone() == before
            assert conn.execute("SELECT count(*) FROM visits").fetchone() == before
    finally:
        for c in (conn, helper, writer):
            c.close()


def test_the_deadline_stops_both_threads(big: Template) -> None:
    """Five slow regexes on every conversion's path: seconds of work, stopped at 0.3 s."""
    conn = connect(big.path, migrate=False)
    req = build_request(big.site_id, "sources", "csv", big.date_from, big.date_to, SLOW_FILTERS)
    assert reads_events(req) and not regex_per_value(req)  # two threads
    deadline = Deadline(0.3, "too slow")
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match="too slow"), deadline.running(conn):
        list(engine.rows(conn, req))
    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name == "sealexports-sums"]
    assert not conn.in_transaction
    conn.close()
