"""Unfiltered aggregates read the daily rollups kept at ingestion; filtered ones read the daily
sums per visit-field combination (`day_groups`), the visits (conditions on visit fields only) or
the events. The paths must agree: a filter that keeps everything forces the day_groups path
(utm_content), the visits path (referrer) or the events path (content_grouping)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.exports.types import EXPORT_TYPES
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits
from tests.conftest import DemoDB

AGGREGATES = [name for name, t in EXPORT_TYPES.items() if t.kind != "events"]
KEEP_ALL = {"advanced_filters": "referrer:ne:-never-"}  # true of every row: forces the visits path
KEEP_ALL_GROUPS = {"advanced_filters": "utm_content:ne:-never-"}  # ...the day_groups path
KEEP_ALL_EVENTS = {"advanced_filters": "content_grouping:ne:-never-"}  # ...the events path


def _both(conn: sqlite3.Connection, export_type: str, date_from: str, date_to: str) -> tuple[bytes, bytes]:
    rollup = build_request("demo", export_type, "csv", date_from, date_to)
    visits = build_request("demo", export_type, "csv", date_from, date_to, KEEP_ALL)
    events = build_request("demo", export_type, "csv", date_from, date_to, KEEP_ALL_EVENTS)
    groups = build_request("demo", export_type, "csv", date_from, date_to, KEEP_ALL_GROUPS)
    assert not rollup.conditions and visits.conditions and events.conditions
    by_visits, by_events = b"".join(engine.chunks(conn, visits)), b"".join(engine.chunks(conn, events))
    assert by_visits == by_events
    assert b"".join(engine.chunks(conn, groups)) == by_events
    return b"".join(engine.chunks(conn, rollup)), by_events


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


# country=ES reads day_groups; with a referrer condition (true of these visits) it reads the visits.
@pytest.mark.parametrize(
    "spain", [{"country": "ES"}, {"advanced_filters": "country:eq:ES,referrer:not_contains:zzz"}]
)
def test_page_views_past_midnight_count_on_their_own_day_under_a_visit_filter(
    tmp_path: Path, spain: dict[str, str]
) -> None:
    conn = connect(tmp_path / "midnight.db")
    site = accounts.create_site(conn, "demo", timezone="Europe/Madrid")
    start = datetime(2025, 3, 10, 22, 50, tzinfo=UTC)  # 23:50 local on the 10th
    late = Visit(
        pages=[PageView(start + timedelta(minutes=m), "/a") for m in (0, 5, 15, 20)],  # 2 on the 11th
        utm_source="google",
        country="ES",
    )
    other = Visit(pages=[PageView(start, "/a")], utm_source="bing", country="FR")
    with transaction(conn):
        insert_visits(conn, site, [late, other])
    assert late.id is not None
    more = dataclasses.replace(
        late, pages=[PageView(start + timedelta(hours=2), "/b")], id=late.id, landing=late.pages[0]
    )
    with transaction(conn):
        insert_visits(conn, site, [more])  # a third page view on the 11th, in a later batch

    def lines(
        export_type: str, date_from: str, date_to: str, filters: Mapping[str, str | list[str]]
    ) -> list[str]:
        req = build_request("demo", export_type, "csv", date_from, date_to, filters)
        return b"".join(engine.chunks(conn, req)).decode().splitlines()[1:]

    assert lines("sources", "2025-03-10", "2025-03-10", spain) == ["google,1,1,0.00,2,0,0,0.00,0.00"]
    assert lines("sources", "2025-03-11", "2025-03-11", spain) == ["google,0,0,0.00,3,0,0,0.00,0.00"]
    assert lines("time_series", "2025-03-10", "2025-03-11", spain) == [
        "2025-03-10,1,1,0.00,2,0,0,0.00,0.00",
        "2025-03-11,0,0,0.00,3,0,0,0.00,0.00",
    ]
    both = {"country": ["ES", "FR"]} if "country" in spain else {"advanced_filters": "referrer:ne:zzz"}
    assert lines("sources", "2025-03-10", "2025-03-11", both) == [
        "bing,1,0,100.00,1,0,0,0.00,0.00",
        "google,1,1,0.00,5,0,0,0.00,0.00",
    ]


@pytest.mark.parametrize(
    "condition",
    ["path:contains:/blog/", "path:eq:/pricing", "path:regex:^/docs/[a-s]", "path:not_contains:/products/",
     "path:in:/|/pricing|/about", "path:ne:/", "path:contains:/blog/,path:not_regex:running"],
)  # fmt: skip
def test_pages_under_path_conditions_from_the_rollups_agree_with_the_events(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, condition: str
) -> None:
    days = (str(demo_db.date_from), str(demo_db.date_to))
    rollup = build_request("demo", "pages", "csv", *days, {"advanced_filters": condition})
    events = build_request(
        "demo", "pages", "csv", *days, {"advanced_filters": f"{condition},content_grouping:ne:-never-"}
    )
    by_rollup, by_events = (
        b"".join(engine.chunks(demo_conn, rollup)),
        b"".join(engine.chunks(demo_conn, events)),
    )
    assert by_rollup == by_events
    assert by_rollup.count(b"\r\n") > 1
