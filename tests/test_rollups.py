"""Unfiltered aggregates read the daily rollups kept at ingestion; filtered ones read the events.
The two paths must agree: a filter that keeps everything forces the events path."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.exports.types import EXPORT_TYPES
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.events import Conversion, PageView, Visit, insert_visits
from tests.conftest import DemoDB

AGGREGATES = [name for name, t in EXPORT_TYPES.items() if t.kind != "events"]
KEEP_ALL = {"advanced_filters": "referrer:ne:-never-"}  # true of every row: forces the events path


def _both(conn: sqlite3.Connection, export_type: str, date_from: str, date_to: str) -> tuple[bytes, bytes]:
    rollup = build_request("demo", export_type, "csv", date_from, date_to)
    events = build_request("demo", export_type, "csv", date_from, date_to, KEEP_ALL)
    assert not rollup.conditions and events.conditions
    return b"".join(engine.chunks(conn, rollup)), b"".join(engine.chunks(conn, events))


@pytest.mark.parametrize("export_type", AGGREGATES)
def test_rollups_agree_with_the_events(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str
) -> None:
    for date_from, date_to in [(demo_db.date_from, demo_db.date_to), ("2025-03-29", "2025-03-31")]:
        rollup, events = _both(demo_conn, export_type, str(date_from), str(date_to))
        assert rollup == events
        assert rollup.count(b"\r\n") > 1


def test_a_visit_continued_in_a_later_batch_becomes_engaged_in_the_rollups(tmp_path: Path) -> None:
    conn = connect(tmp_path / "continued.db")
    site = accounts.create_site(conn, "demo", timezone="Europe/Madrid")
    start = datetime(2025, 3, 10, 22, 50, tzinfo=UTC)  # 23:50 local: the visit crosses midnight
    first = Visit(pages=[PageView(start, "/a", "blog")], utm_source="google", country="ES")
    with transaction(conn):
        insert_visits(conn, site, [first])
    assert first.id is not None
    more = dataclasses.replace(
        first,
        pages=[PageView(start + timedelta(minutes=15), "/b", "blog")],
        conversions=[Conversion(start + timedelta(minutes=16), "purchase", "/b", "blog", 1234)],
        id=first.id,
        landing=first.pages[0],
    )
    with transaction(conn):
        insert_visits(
            conn,
            site,
            [
                more,
                dataclasses.replace(
                    more, pages=[PageView(start + timedelta(minutes=20), "/c")], conversions=[]
                ),
            ],
        )
    for export_type in AGGREGATES:
        rollup, events = _both(conn, export_type, "2025-03-10", "2025-03-11")
        assert rollup == events, export_type
    sources = b"".join(
        engine.chunks(conn, build_request("demo", "sources", "csv", "2025-03-10", "2025-03-11"))
    )
    # One visit, engaged once (not twice), three page views, one purchase of 12.34.
    assert sources.decode().splitlines()[1] == "google,1,1,0.00,3,0,1,100.00,12.34"
