"""`sealexports import`: the events format, stitching, idempotence, and the exports afterwards.

Real SQLite files and the real command through CliRunner. The exports of a small hand-made file
are checked against numbers worked out by hand (and, as a second opinion, tests/model.py).
"""

# ruff: noqa: E501  (tables of events and expected rows read best one per line)

from __future__ import annotations

import csv
import gzip
import io
import json
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sealexports.cli import cli
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.ingest import import_events, ndjson_items
from sealexports.storage import accounts
from sealexports.storage.database import connect
from sealexports.storage.visits import Conversion, PageView, Visit
from tests.checks import assert_cli_error
from tests.commands import run
from tests.model import Model

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
PIXEL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
WINDOWS_EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"
)
MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
EVENT_TABLES = ("visits", "pageviews", "conversions", "microconversions")

# --- The hand-made file ------------------------------------------------------------------------
# Site shop, Europe/Madrid (UTC+1, UTC+2 from 2025-03-30 02:00 local, which becomes 03:00).
# alice: visit 1 lands at 23:50 on 03-29 and goes on past midnight; 30m01s after her purchase a
#        page view starts visit 2, whose microconversion comes exactly 30 minutes later (same visit).
# b-1:   an explicit visit across the DST change, with a page view 1h55m after the one before.
# carol: epoch times; a one-page visit with a signup. dave: 23:30 UTC on 03-28 is 03-29 in Madrid.
HAND: list[dict[str, Any]] = [
    {"type": "pageview", "ts": "2025-03-29T23:50:00+01:00", "visitor": "alice", "path": "/",
     "content_grouping": "home", "referrer": "https://www.google.com/search?q=shoes",
     "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring", "utm_term": "shoes",
     "utm_content": "", "country": "es", "user_agent": IPHONE},
    {"type": "pageview", "ts": "2025-03-30T00:15:00+01:00", "visitor": "alice", "path": "/pricing",
     "content_grouping": "pricing", "utm_source": "ignored: not a landing page"},
    {"type": "conversion", "ts": "2025-03-30T00:16:00+01:00", "visitor": "alice", "path": "/pricing",
     "content_grouping": "pricing", "conversion_type": "purchase", "amount": 19.99,
     "properties": {"order": "A1", "items": 2}},
    {"type": "pageview", "ts": "2025-03-30T00:46:01+01:00", "visitor": "alice", "path": "/",
     "content_grouping": "home", "country": "ES", "device_type": "mobile", "browser": "Safari", "os": "iOS"},
    {"type": "microconversion", "ts": "2025-03-30T01:16:01+01:00", "visitor": "alice", "path": "/",
     "content_grouping": "home", "conversion_type": "newsletter"},
    {"type": "pageview", "ts": "2025-03-30T01:55:00+01:00", "visit_id": "b-1", "path": "/blog/dst",
     "content_grouping": "blog", "utm_source": "newsletter", "utm_medium": "email", "country": "FR",
     "device_type": "desktop", "browser": "Firefox", "os": "Linux"},
    {"type": "pageview", "ts": "2025-03-30T03:05:00+02:00", "visit_id": "b-1", "path": "/pricing",
     "content_grouping": "pricing"},
    {"type": "conversion", "ts": "2025-03-30T03:06:00+02:00", "visit_id": "b-1", "path": "/pricing",
     "content_grouping": "pricing", "conversion_type": "lead", "amount": "15"},
    {"type": "pageview", "ts": "2025-03-30T05:00:00+02:00", "visit_id": "b-1", "path": "/docs",
     "content_grouping": "docs"},
    {"type": "pageview", "ts": 1743415200, "visitor": "carol", "path": "/pricing",
     "content_grouping": "pricing", "referrer": "news.example", "country": "DE",
     "device_type": "tablet", "browser": "Chrome", "os": "Android"},
    {"type": "conversion", "ts": 1743415500.0, "visitor": "carol", "path": "/pricing",
     "conversion_type": "signup", "properties": {"plan": "trial"}},
    {"id": "dave-1", "type": "pageview", "ts": "2025-03-28T23:30:00Z", "visitor": "dave",
     "path": "/blog/dst", "content_grouping": "blog", "utm_campaign": ""},
]  # fmt: skip
FROM, TO = "2025-03-29", "2025-03-31"

M_HEAD = (
    "entrances engaged_entrances bounce_rate page_views microconversions conversions conversion_rate revenue"
)
EXPECTED: dict[str, tuple[str, list[str]]] = {
    "pages": ("path views entrances conversions content_grouping", [
        "/pricing,3,1,3,pricing", "/,2,2,0,home", "/blog/dst,2,2,0,blog", "/docs,1,0,0,docs"]),
    "landing_pages": (f"landing_page content_grouping {M_HEAD}", [
        "/,home,2,1,50.00,3,1,1,50.00,19.99", "/blog/dst,blog,2,1,50.00,4,0,1,50.00,15.00",
        "/pricing,pricing,1,0,100.00,1,0,1,100.00,0.00"]),
    "sources": (f"utm_source {M_HEAD}", [
        ",3,0,100.00,3,1,1,33.33,0.00", "google,1,1,0.00,2,0,1,100.00,19.99",
        "newsletter,1,1,0.00,3,0,1,100.00,15.00"]),
    "mediums": (f"utm_medium {M_HEAD}", [
        ",3,0,100.00,3,1,1,33.33,0.00", "cpc,1,1,0.00,2,0,1,100.00,19.99", "email,1,1,0.00,3,0,1,100.00,15.00"]),
    "campaigns": (f"utm_campaign {M_HEAD}", [",4,1,75.00,6,1,2,50.00,15.00", "spring,1,1,0.00,2,0,1,100.00,19.99"]),
    "terms": (f"utm_term {M_HEAD}", [",4,1,75.00,6,1,2,50.00,15.00", "shoes,1,1,0.00,2,0,1,100.00,19.99"]),
    "countries": (f"country country_name {M_HEAD}", [
        "ES,Spain,2,1,50.00,3,1,1,50.00,19.99", ",,1,0,100.00,1,0,0,0.00,0.00",
        "DE,Germany,1,0,100.00,1,0,1,100.00,0.00", "FR,France,1,1,0.00,3,0,1,100.00,15.00"]),
    "devices": (f"device_type {M_HEAD}", [
        "mobile,2,1,50.00,3,1,1,50.00,19.99", ",1,0,100.00,1,0,0,0.00,0.00",
        "desktop,1,1,0.00,3,0,1,100.00,15.00", "tablet,1,0,100.00,1,0,1,100.00,0.00"]),
    "browsers": (f"browser {M_HEAD}", [
        "Safari,2,1,50.00,3,1,1,50.00,19.99", ",1,0,100.00,1,0,0,0.00,0.00",
        "Chrome,1,0,100.00,1,0,1,100.00,0.00", "Firefox,1,1,0.00,3,0,1,100.00,15.00"]),
    "os": (f"os {M_HEAD}", [
        "iOS,2,1,50.00,3,1,1,50.00,19.99", ",1,0,100.00,1,0,0,0.00,0.00",
        "Android,1,0,100.00,1,0,1,100.00,0.00", "Linux,1,1,0.00,3,0,1,100.00,15.00"]),
    "time_series": (f"date {M_HEAD}", [
        "2025-03-29,2,1,50.00,2,0,0,0.00,0.00", "2025-03-30,2,1,50.00,5,1,2,100.00,34.99",
        "2025-03-31,1,0,100.00,1,0,1,100.00,0.00"]),
    "conversions": (
        "date timestamp conversion_type amount path landing_page utm_source utm_medium utm_campaign "
        "utm_term utm_content country device_type browser os content_grouping properties", [
        '2025-03-30,2025-03-29T23:16:00Z,purchase,19.99,/pricing,/,google,cpc,spring,shoes,,ES,mobile,'
        'Safari,iOS,pricing,"{""order"":""A1"",""items"":2}"',
        "2025-03-30,2025-03-30T01:06:00Z,lead,15.00,/pricing,/blog/dst,newsletter,email,,,,FR,desktop,"
        "Firefox,Linux,pricing,",
        '2025-03-31,2025-03-31T10:05:00Z,signup,0.00,/pricing,/pricing,,,,,,DE,tablet,Chrome,Android,,'
        '"{""plan"":""trial""}"']),
    "microconversions": (
        "date timestamp conversion_type path landing_page utm_source utm_medium utm_campaign "
        "utm_term utm_content country device_type browser os content_grouping properties", [
        "2025-03-30,2025-03-30T00:16:01Z,newsletter,/,/,,,,,,ES,mobile,Safari,iOS,home,"]),
}  # fmt: skip


# --- Helpers -----------------------------------------------------------------------------------


def ndjson(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text(ndjson(events))
    return path


def rows(db: Path, table: str, columns: str = "*", order: str = "id") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()
    finally:
        conn.close()


def contents(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    tables = (*EVENT_TABLES, "pages", "day_keys", "day_rows", "visit_keys")
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in tables}
    finally:
        conn.close()


def count(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "sealexports.db"
    assert run(path, "init").exit_code == 0
    assert run(path, "sites", "create", "shop", "--timezone", "Europe/Madrid").exit_code == 0
    return path


def imported(db: Path, tmp_path: Path, events: list[dict[str, Any]], *extra: str) -> Result:
    result = run(
        db, "import", str(write(tmp_path / "events.ndjson", events)), "--site", "shop", "--silent", *extra
    )
    assert result.exit_code == 0, result.output
    return result


def export_csv(db: Path, export_type: str, filters: dict[str, Any] | None = None) -> list[str]:
    conn = connect(db)
    try:
        req = build_request("shop", export_type, "csv", FROM, TO, filters)
        return b"".join(engine.chunks(conn, req)).decode().split("\r\n")[:-1]
    finally:
        conn.close()


# --- Exports after an import: by hand --------------------------------------------------------


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hand")
    path = folder / "hand.db"
    run(path, "init")
    run(path, "sites", "create", "shop", "--timezone", "Europe/Madrid")
    result = run(path, "import", str(write(folder / "hand.ndjson", HAND)), "--site", "shop", "--silent")
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.parametrize("export_type", sorted(EXPECTED))
def test_exports_after_import_match_numbers_worked_out_by_hand(hand_db: Path, export_type: str) -> None:
    header, body = EXPECTED[export_type]
    assert export_csv(hand_db, export_type) == [header.replace(" ", ","), *body]


def _model_visits() -> list[Visit]:
    """The hand file's visits written out as the stitching rules say they are."""
    from datetime import datetime

    def t(s: str) -> datetime:
        return datetime.fromisoformat(s)

    return [
        Visit([PageView(t("2025-03-29T23:50:00+01:00"), "/", "home"),
               PageView(t("2025-03-30T00:15:00+01:00"), "/pricing", "pricing")],
              referrer="google.com", utm_source="google", utm_medium="cpc", utm_campaign="spring",
              utm_term="shoes", country="ES", device_type="mobile", browser="Safari", os="iOS",
              conversions=[Conversion(t("2025-03-30T00:16:00+01:00"), "purchase", "/pricing", "pricing",
                                      1999, '{"order":"A1","items":2}')]),
        Visit([PageView(t("2025-03-30T00:46:01+01:00"), "/", "home")], country="ES", device_type="mobile",
              browser="Safari", os="iOS",
              microconversions=[Conversion(t("2025-03-30T01:16:01+01:00"), "newsletter", "/", "home")]),
        Visit([PageView(t("2025-03-30T01:55:00+01:00"), "/blog/dst", "blog"),
               PageView(t("2025-03-30T03:05:00+02:00"), "/pricing", "pricing"),
               PageView(t("2025-03-30T05:00:00+02:00"), "/docs", "docs")],
              utm_source="newsletter", utm_medium="email", country="FR", device_type="desktop",
              browser="Firefox", os="Linux",
              conversions=[Conversion(t("2025-03-30T03:06:00+02:00"), "lead", "/pricing", "pricing", 1500)]),
        Visit([PageView(t("2025-03-31T10:00:00+00:00"), "/pricing", "pricing")], referrer="news.example",
              country="DE", device_type="tablet", browser="Chrome", os="Android",
              conversions=[Conversion(t("2025-03-31T10:05:00+00:00"), "signup", "/pricing", None, 0,
                                      '{"plan":"trial"}')]),
        Visit([PageView(t("2025-03-28T23:30:00+00:00"), "/blog/dst", "blog")]),
    ]  # fmt: skip


@pytest.mark.parametrize("export_type", sorted(EXPECTED))
def test_hand_numbers_agree_with_the_model(export_type: str) -> None:
    """The second opinion: tests/model.py over the same visits gives the same rows."""
    model = Model(_model_visits(), "Europe/Madrid")
    got = model.rows(export_type, date(2025, 3, 29), date(2025, 3, 31))
    _, body = EXPECTED[export_type]
    expected = list(csv.reader(io.StringIO("\r\n".join(body))))
    cells = [["" if v is None else str(v) for v in row] for row in got]
    assert cells == expected


def test_referrers_are_host_names(hand_db: Path) -> None:
    assert rows(hand_db, "visits", "referrer", order="started_at") == [
        (None,),
        ("google.com",),
        (None,),
        (None,),
        ("news.example",),
    ]
    assert export_csv(hand_db, "sources", {"advanced_filters": "referrer:eq:google.com"})[1:] == [
        "google,1,1,0.00,2,0,1,100.00,19.99"
    ]


def test_imported_visits_land_on_the_sites_local_days(hand_db: Path) -> None:
    got = rows(hand_db, "visits", "started_at, day, landing_page, page_views", order="started_at")
    assert got == [
        ("2025-03-28T23:30:00Z", "2025-03-29", "/blog/dst", 1),
        ("2025-03-29T22:50:00Z", "2025-03-29", "/", 2),
        ("2025-03-29T23:46:01Z", "2025-03-30", "/", 1),
        ("2025-03-30T00:55:00Z", "2025-03-30", "/blog/dst", 3),
        ("2025-03-31T10:00:00Z", "2025-03-31", "/pricing", 1),
    ]


# --- Stitching -----------------------------------------------------------------------------------


def pv(ts: object, path: str = "/", **extra: Any) -> dict[str, Any]:
    return {"type": "pageview", "ts": ts, "visitor": "v", "path": path, **extra}


def conv(ts: str, kind: str = "conversion", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "ts": ts, "visitor": "v", "path": "/", "conversion_type": "x", **extra}


@pytest.mark.parametrize(
    ("second", "visits"),
    [("2025-06-01T10:30:00Z", 1), ("2025-06-01T10:30:01Z", 2), ("2025-06-01T10:29:59Z", 1)],
)
def test_a_visitor_visit_lasts_while_events_are_at_most_30_minutes_apart(
    db: Path, tmp_path: Path, second: str, visits: int
) -> None:
    imported(db, tmp_path, [pv("2025-06-01T10:00:00Z"), pv(second, "/b")])
    assert count(db, "visits") == visits
    assert count(db, "pageviews") == 2


def test_any_event_keeps_a_visit_open(db: Path, tmp_path: Path) -> None:
    events = [pv("2025-06-01T10:00:00Z"), conv("2025-06-01T10:25:00Z", "microconversion"),
              pv("2025-06-01T10:50:00Z", "/b")]  # fmt: skip
    imported(db, tmp_path, events)
    assert rows(db, "visits", "page_views") == [(2,)]


def test_a_visit_goes_on_across_midnight_and_the_dst_change(db: Path, tmp_path: Path) -> None:
    # 01:50 (UTC+1) then 03:10 (UTC+2) in Madrid: 20 minutes apart, whatever the clock says.
    events = [pv("2025-03-29T23:55:00+01:00"), pv("2025-03-30T00:20:00+01:00", "/b"),
              pv("2025-03-30T00:45:00+01:00", "/c"), pv("2025-03-30T01:10:00+01:00", "/d"),
              pv("2025-03-30T01:35:00+01:00", "/e"), pv("2025-03-30T03:00:00+02:00", "/f")]  # fmt: skip
    imported(db, tmp_path, events)
    assert rows(db, "visits", "day, page_views") == [("2025-03-29", 6)]
    days = [r[0] for r in rows(db, "pageviews", "day")]
    assert days == ["2025-03-29"] + ["2025-03-30"] * 5


def test_visits_with_a_visit_id_have_no_inactivity_rule(db: Path, tmp_path: Path) -> None:
    events = [
        {"type": "pageview", "ts": f"2025-06-01T{h:02d}:00:00Z", "visit_id": 7, "path": "/"}
        for h in (1, 5, 9)
    ]
    imported(db, tmp_path, events)
    assert rows(db, "visits", "page_views") == [(3,)]


def test_events_in_any_order_are_stitched_by_time(db: Path, tmp_path: Path) -> None:
    events = [conv("2025-06-01T10:11:00Z", amount=5), pv("2025-06-01T10:10:00Z", "/b"),
              pv("2025-06-01T10:00:00Z", "/a"), pv("2025-06-01T12:00:00Z", "/c")]  # fmt: skip
    imported(db, tmp_path, events)
    assert rows(db, "visits", "landing_page, page_views") == [("/a", 2), ("/c", 1)]
    assert rows(db, "conversions", "visit_id, amount_cents") == [(1, 500)]


def test_a_page_view_and_a_conversion_of_the_same_second_start_the_visit_in_that_order(
    db: Path, tmp_path: Path
) -> None:
    imported(db, tmp_path, [conv("2025-06-01T10:00:00Z"), pv("2025-06-01T10:00:00Z")])
    assert count(db, "visits") == 1 and count(db, "conversions") == 1


@pytest.mark.parametrize(
    ("events", "field", "message"),
    [
        ([conv("2025-06-01T10:00:00Z")], "visitor", "no visit open"),
        ([pv("2025-06-01T10:00:00Z"), conv("2025-06-01T10:30:01Z", "microconversion")], "visitor", "no visit open"),
        ([{"type": "conversion", "ts": "2025-06-01T10:00:00Z", "visit_id": "q", "path": "/",
           "conversion_type": "x"}], "visit_id", "visit 'q' has no page view"),
    ],
)  # fmt: skip
def test_a_conversion_with_no_visit_to_join_is_a_bad_line(
    db: Path, tmp_path: Path, events: list[dict[str, Any]], field: str, message: str
) -> None:
    result = run(db, "import", str(write(tmp_path / "e.ndjson", events)), "--site", "shop", "--silent")
    assert_cli_error(result, f"line {len(events)}: {field}: ", message, "nothing was imported")
    assert all(count(db, t) == 0 for t in (*EVENT_TABLES, "import_ids"))


def test_small_windows_stitch_exactly_as_one_big_window(tmp_path: Path) -> None:
    """Windows split visits; the carried key and the stored keys continue them (dry run too)."""
    events = [pv(f"2025-06-01T10:{m:02d}:00Z", f"/{m}", visitor=f"v{m % 3}") for m in range(0, 60, 4)]
    events += [conv(f"2025-06-01T10:{m:02d}:30Z", visitor=f"v{m % 3}") for m in range(0, 60, 12)]
    results = []
    for window in (2, 3, 5000):
        path = tmp_path / f"w{window}.db"
        conn = connect(path)
        site = accounts.create_site(conn, "shop", timezone="Europe/Madrid")
        lines = [json.dumps(e).encode() for e in events]
        report = import_events(conn, site, ndjson_items(lines), window=window)
        conn.close()
        assert report.imported == len(events)
        results.append(contents(path))
    assert results[0] == results[1] == results[2]
    assert [r[5] for r in results[0]["visits"]] == [5, 5, 5]  # page_views, one visit per visitor


# --- Across imports ------------------------------------------------------------------------------


def test_a_later_import_continues_a_visitors_open_visit(db: Path, tmp_path: Path) -> None:
    imported(db, tmp_path, [pv("2025-06-01T10:00:00Z", "/a")])
    imported(db, tmp_path, [pv("2025-06-01T10:20:00Z", "/b"), conv("2025-06-01T10:21:00Z", amount=1)])
    imported(db, tmp_path, [pv("2025-06-01T11:00:00Z", "/c")])
    assert rows(db, "visits", "landing_page, page_views") == [("/a", 2), ("/c", 1)]
    assert rows(db, "pageviews", "visit_id, path, is_entrance, landing_page") == [
        (1, "/a", 1, "/a"), (1, "/b", 0, "/a"), (2, "/c", 1, "/c")
    ]  # fmt: skip
    assert rows(db, "conversions", "visit_id, landing_page") == [(1, "/a")]


def test_an_event_before_a_stored_visit_starts_is_a_bad_line(db: Path, tmp_path: Path) -> None:
    imported(db, tmp_path, [pv("2025-06-01T10:00:00Z", "/a")])
    result = run(db, "import", str(write(tmp_path / "late.ndjson", [pv("2025-06-01T09:59:00Z")])),
                 "--site", "shop", "--silent")  # fmt: skip
    assert_cli_error(result, "line 1: ts: before the start of this visitor's latest stored visit")
    assert count(db, "pageviews") == 1


# --- Idempotence ---------------------------------------------------------------------------------


def test_importing_the_same_file_twice_adds_nothing(hand_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "again.db"
    source, target = sqlite3.connect(hand_db), sqlite3.connect(copy)
    source.backup(target)  # not a file copy: part of a WAL database may still be in its -wal file
    source.close()
    target.close()
    before = contents(copy)
    result = run(copy, "import", str(write(tmp_path / "hand.ndjson", HAND)), "--site", "shop")
    assert result.exit_code == 0, result.output
    assert contents(copy) == before
    assert "Imported 0 events" in result.stderr and f"skipped {len(HAND)} duplicates" in result.stderr


def test_duplicates_are_recognised_by_id_or_by_content(db: Path, tmp_path: Path) -> None:
    events = [
        pv("2025-06-01T10:00:00Z", "/a"),
        pv("2025-06-01T12:00:00+02:00", "/a"),  # the same instant, spelled otherwise
        pv(1748772000, "/a", utm_term=""),  # again: epoch seconds, and an empty field
        pv("2025-06-01T10:05:00Z", "/b", id="e1"),
        pv("2025-06-01T10:06:00Z", "/c", id="e1"),  # same id: the same event, whatever it says
        conv("2025-06-01T10:07:00Z", properties={"a": 1, "b": 2}),
        conv("2025-06-01T10:07:00Z", properties={"b": 2, "a": 1}),
    ]
    result = run(db, "import", str(write(tmp_path / "d.ndjson", events)), "--site", "shop")
    assert result.exit_code == 0, result.output
    assert rows(db, "pageviews", "path") == [("/a",), ("/b",)]
    assert count(db, "conversions") == 1
    assert "Imported 3 events" in result.stderr and "skipped 4 duplicates" in result.stderr
    result = run(db, "import", str(write(tmp_path / "e.ndjson", [pv("2025-06-01T10:09:00Z", "/z", id="e1")])),
                 "--site", "shop")  # fmt: skip
    assert "Imported 0 events" in result.stderr and count(db, "pageviews") == 2


# --- Fields --------------------------------------------------------------------------------------


def one_visit(db: Path, tmp_path: Path, event: dict[str, Any]) -> dict[str, Any]:
    imported(db, tmp_path, [event])
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM visits").fetchone()
    conn.close()
    return dict(row)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"utm_source": "g", "utm_medium": "cpc", "utm_campaign": "c", "utm_term": "t", "utm_content": "x"},
         {"utm_source": "g", "utm_medium": "cpc", "utm_campaign": "c", "utm_term": "t", "utm_content": "x"}),
        ({"utm_source": "", "utm_medium": None}, {"utm_source": None, "utm_medium": None}),
        ({"country": "pt"}, {"country": "PT"}),
        ({"device_type": "Tablet", "browser": "Opera", "os": "Android"},
         {"device_type": "tablet", "browser": "Opera", "os": "Android"}),
        ({"referrer": "HTTPS://WWW.Example.com:8080/a?b=c"}, {"referrer": "example.com"}),
        ({"referrer": "www.bing.com/search"}, {"referrer": "bing.com"}),
        ({"content_grouping": "blog"}, {"content_grouping": "blog"}),
        ({"user_agent": IPHONE}, {"device_type": "mobile", "browser": "Safari", "os": "iOS"}),
        ({"user_agent": PIXEL}, {"device_type": "mobile", "browser": "Chrome", "os": "Android"}),
        ({"user_agent": ANDROID_TABLET}, {"device_type": "tablet", "browser": "Chrome", "os": "Android"}),
        ({"user_agent": WINDOWS_EDGE}, {"device_type": "desktop", "browser": "Edge", "os": "Windows"}),
        ({"user_agent": MAC_SAFARI}, {"device_type": "desktop", "browser": "Safari", "os": "macOS"}),
        ({"user_agent": "curl/8.5.0"}, {"device_type": None, "browser": "curl", "os": None}),
        ({"user_agent": IPHONE, "browser": "Brave"}, {"device_type": "mobile", "browser": "Brave", "os": "iOS"}),
    ],
)  # fmt: skip
def test_visit_fields_are_normalised(
    db: Path, tmp_path: Path, given: dict[str, Any], expected: dict[str, Any]
) -> None:
    row = one_visit(db, tmp_path, pv("2025-06-01T10:00:00Z", **given))
    assert {k: row[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("ts", "utc", "day"),
    [
        ("2025-03-30T01:59:59+01:00", "2025-03-30T00:59:59Z", "2025-03-30"),
        ("2025-03-29T23:00:00Z", "2025-03-29T23:00:00Z", "2025-03-30"),
        ("2025-03-29T22:59:59Z", "2025-03-29T22:59:59Z", "2025-03-29"),
        ("2025-10-26T00:30:00Z", "2025-10-26T00:30:00Z", "2025-10-26"),
        (1743292800, "2025-03-30T00:00:00Z", "2025-03-30"),
        ("1743292800.9", "2025-03-30T00:00:00Z", "2025-03-30"),
        ("2025-03-30 02:30:00+02:00", "2025-03-30T00:30:00Z", "2025-03-30"),
    ],
)
def test_times_are_stored_in_utc_on_the_sites_local_day(
    db: Path, tmp_path: Path, ts: Any, utc: str, day: str
) -> None:
    row = one_visit(db, tmp_path, pv(ts))
    assert (row["started_at"], row["day"]) == (utc, day)


@pytest.mark.parametrize(
    ("amount", "cents"), [(19.99, 1999), ("19.9", 1990), (0, 0), ("1e2", 10000), (None, 0), ("", 0)]
)
def test_amounts_are_integer_cents(db: Path, tmp_path: Path, amount: Any, cents: int) -> None:
    imported(db, tmp_path, [pv("2025-06-01T10:00:00Z"), conv("2025-06-01T10:00:01Z", amount=amount)])
    assert rows(db, "conversions", "amount_cents") == [(cents,)]


def test_properties_become_minified_json_text(db: Path, tmp_path: Path) -> None:
    props = {"sku": "ZAP-1", "nested": {"ñ": [1, 2.5, None, True]}, "note": "dos  espacios"}
    imported(
        db,
        tmp_path,
        [pv("2025-06-01T10:00:00Z"), conv("2025-06-01T10:00:01Z", "microconversion", properties=props)],
    )
    assert rows(db, "microconversions", "properties, conversion_type") == [
        ('{"sku":"ZAP-1","nested":{"ñ":[1,2.5,null,true]},"note":"dos  espacios"}', "x")
    ]


# --- Bad input ---------------------------------------------------------------------------------

GOOD = pv("2025-06-01T10:00:00Z")


def nest(levels: int) -> dict[str, Any]:
    """`properties` whose objects and arrays nest `levels` deep (the object itself is one)."""
    value: Any = 1
    for i in range(levels - 1):
        value = {"a": value} if i % 2 else [value]
    return {"a": value}


# properties nested 1,000 deep: more than json.dumps can recurse into (written out by hand)
DEEP = json.dumps(conv("2025-06-01T10:00:01Z"))[:-1] + ', "properties": ' + '{"a": ' * 1000 + "1" + "}" * 1001


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"type": "pageview",', "line 2: not valid JSON"),
        ("[1, 2]", "line 2: an event must be a JSON object"),
        (pv("2025-06-01T10:00:00Z", colour="red"), "line 2: colour: unknown field"),
        ({k: v for k, v in GOOD.items() if k != "type"}, "line 2: type: missing"),
        (pv("2025-06-01T10:00:00Z", type="click"), "line 2: type: 'click' is not one of pageview"),
        ({k: v for k, v in GOOD.items() if k != "ts"}, "line 2: ts: missing"),
        (pv("2025-13-01T10:00:00Z"), "line 2: ts: '2025-13-01T10:00:00Z' is not an ISO 8601 time"),
        (pv("2025-06-01T10:00:00"), "line 2: ts: '2025-06-01T10:00:00' has no UTC offset"),
        (pv("2025-06-01"), "line 2: ts: '2025-06-01' has no UTC offset"),
        (pv(1748772000000), "line 2: ts: 1748772000000 is outside 2000-2099 (milliseconds?"),
        (pv(True), "line 2: ts: must be an ISO 8601 time or epoch seconds, got a boolean"),
        (pv("1999-12-31T23:59:59Z"), "line 2: ts: '1999-12-31T23:59:59Z' is outside 2000-2099"),
        ({k: v for k, v in GOOD.items() if k != "visitor"}, "line 2: visitor: missing: an event needs a visit_id"),
        (pv("2025-06-01T10:00:00Z", visit_id="x"), "line 2: visit_id: give visit_id or visitor, not both"),
        (pv("2025-06-01T10:00:00Z", visitor=12), "line 2: visitor: must be a string, got a number"),
        ({**GOOD, "visitor": None, "visit_id": [1]}, "line 2: visit_id: must be a string or an integer"),
        ({k: v for k, v in GOOD.items() if k != "path"}, "line 2: path: missing"),
        (pv("2025-06-01T10:00:00Z", "https://shop.example/a"), "line 2: path: must start with '/'"),
        (pv("2025-06-01T10:00:00Z", "/" + "a" * 2048), "line 2: path: longer than 2048 characters"),
        (pv("2025-06-01T10:00:00Z", country="ESP"), "line 2: country: 'ESP' is not an ISO 3166-1 alpha-2"),
        (pv("2025-06-01T10:00:00Z", device_type="phone"), "line 2: device_type: 'phone' is not one of desktop"),
        (pv("2025-06-01T10:00:00Z", utm_source=["a"]), "line 2: utm_source: must be a string, got an array"),
        (pv("2025-06-01T10:00:00Z", referrer="http://["), "line 2: referrer: 'http://[' is not a URL"),
        (pv("2025-06-01T10:00:00Z", amount=1), "line 2: amount: page views have none"),
        (pv("2025-06-01T10:00:00Z", conversion_type="x"), "line 2: conversion_type: page views have none"),
        (pv("2025-06-01T10:00:00Z", properties={}), "line 2: properties: page views have none"),
        ({**conv("2025-06-01T10:00:01Z"), "conversion_type": ""}, "line 2: conversion_type: missing"),
        (conv("2025-06-01T10:00:01Z", "microconversion", amount=1), "line 2: amount: only conversions"),
        (conv("2025-06-01T10:00:01Z", amount=-1), "line 2: amount: -1 must be a number >= 0"),
        (conv("2025-06-01T10:00:01Z", amount="1.005"), "line 2: amount: '1.005' has more than 2 decimals"),
        (conv("2025-06-01T10:00:01Z", amount="ten"), "line 2: amount: 'ten' is not a number"),
        (conv("2025-06-01T10:00:01Z", amount="NaN"), "line 2: amount: 'NaN' is not a number"),
        (conv("2025-06-01T10:00:01Z", amount=1e20), "line 2: amount: 1e+20 is too large"),
        (conv("2025-06-01T10:00:01Z", amount={}), "line 2: amount: must be a number, got an object"),
        (conv("2025-06-01T10:00:01Z", properties=[1]), "line 2: properties: must be a JSON object, got an array"),
        (conv("2025-06-01T10:00:01Z", properties="{}"), "line 2: properties: must be a JSON object, got str"),
        (conv("2025-06-01T10:00:01Z", properties={"a": "x" * 20000}), "line 2: properties: longer than"),
        (pv("2025-06-01T10:00:00Z", id={"a": 1}), "line 2: id: must be a string or an integer"),
        (DEEP, "line 2: properties: nested more than 32 levels deep"),
        (conv("2025-06-01T10:00:01Z", properties=nest(33)), "line 2: properties: nested more than 32 levels deep"),
        (conv("2025-06-01T10:00:01Z", conversion_type="buy\0,INJECTED"), "line 2: conversion_type: contains a NUL character"),
        (pv("2025-06-01T10:00:00Z", utm_source="\0"), "line 2: utm_source: contains a NUL character"),
        (pv("2025-06-01T10:00:00Z", visitor="v\0w"), "line 2: visitor: contains a NUL character"),
        (pv("2025-06-01T10:00:00Z", id="a\0"), "line 2: id: contains a NUL character"),
    ],
)  # fmt: skip
def test_a_bad_line_is_one_error_naming_it_and_nothing_is_written(
    db: Path, tmp_path: Path, line: Any, expected: str
) -> None:
    text = json.dumps(GOOD) + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n"
    (tmp_path / "bad.ndjson").write_text(text)
    result = run(db, "import", str(tmp_path / "bad.ndjson"), "--site", "shop")
    assert_cli_error(result, expected, "nothing was imported")
    assert all(count(db, t) == 0 for t in (*EVENT_TABLES, "import_ids", "visit_keys", "pages"))


def test_skip_invalid_refuses_only_the_deeply_nested_event(db: Path, tmp_path: Path) -> None:
    lines = [json.dumps(GOOD), DEEP, json.dumps(conv("2025-06-01T10:00:02Z", properties=nest(32)))]
    (tmp_path / "deep.ndjson").write_text("\n".join(lines) + "\n")
    result = run(db, "import", str(tmp_path / "deep.ndjson"), "--site", "shop", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "line 2: properties: nested more than 32 levels deep" in result.stderr
    assert count(db, "pageviews") == 1 and count(db, "conversions") == 1


def test_the_error_names_the_first_bad_lines_and_counts_the_rest(db: Path, tmp_path: Path) -> None:
    lines = [json.dumps(GOOD)] + ["nope"] * 8 + [json.dumps(pv("x"))]
    (tmp_path / "bad.ndjson").write_text("\n".join(lines) + "\n")
    message = assert_cli_error(run(db, "import", str(tmp_path / "bad.ndjson"), "--site", "shop", "--silent"))
    assert message.count("not valid JSON") == 5
    assert "line 2: not valid JSON" in message and "line 6: " in message and "line 7" not in message
    assert "and 4 more bad lines" in message


def test_skip_invalid_imports_the_good_lines_and_lists_the_bad(db: Path, tmp_path: Path) -> None:
    events = [GOOD, pv("bad"), conv("2025-06-01T10:01:00Z"), conv("2025-06-01T12:00:00Z")]
    result = run(db, "import", str(write(tmp_path / "s.ndjson", events)), "--site", "shop", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert count(db, "pageviews") == 1 and count(db, "conversions") == 1
    assert "Imported 2 events" in result.stderr and "2 bad lines:" in result.stderr
    assert "line 2: ts: 'bad' is not an ISO 8601 time" in result.stderr
    assert "line 4: visitor: no visit open for this visitor" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["import", "missing.ndjson", "--site", "shop"], "No such file or directory"),
        (["import", "-", "--site", "nope"], "site 'nope' not found"),
        (["import", "-"], "Missing option '--site'"),
        (["import", "-", "--site", "shop", "--format", "xml"], "'xml' is not one of"),
    ],
)
def test_bad_import_commands_are_one_error_line(db: Path, args: list[str], expected: str) -> None:
    assert_cli_error(run(db, *args, input=""), expected)


# --- Formats and inputs --------------------------------------------------------------------------


def as_csv(events: list[dict[str, Any]]) -> str:
    columns = sorted({k for e in events for k in e})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for e in events:
        writer.writerow(
            ["" if e.get(c) is None else json.dumps(e[c]) if c == "properties" else e[c] for c in columns]
        )
    return out.getvalue()


def test_csv_imports_the_same_as_ndjson(hand_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "csv.db"
    run(path, "init")
    run(path, "sites", "create", "shop", "--timezone", "Europe/Madrid")
    (tmp_path / "hand.csv").write_text(as_csv(HAND))
    result = run(path, "import", str(tmp_path / "hand.csv"), "--site", "shop", "--silent")
    assert result.exit_code == 0, result.output
    assert contents(path) == contents(hand_db)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type,ts,visitor,path,colour\n", "line 1: unknown column 'colour'"),
        ("type,ts,ts\n", "line 1: column 'ts' appears twice"),
        ("type,ts,visitor,path\npageview,2025-06-01T10:00:00Z,v\n", "line 2: 3 cells, but the header has 4"),
        ("type,ts,visitor,path,conversion_type,properties\n"
         "pageview,2025-06-01T10:00:00Z,v,/,,\nconversion,2025-06-01T10:00:01Z,v,/,x,{nope\n",
         "line 3: properties: not valid JSON"),
        ('type,ts,visitor,path\npageview,2025-06-01T10:00:00Z,"v"x,/\n', "line 2: bad CSV"),
        ("type,ts,visitor,path\npageview,2025-06-01T10:00:00Z,v,/\r\npageview,x,v,/\n",
         "line 3: ts: 'x' is not an ISO 8601 time"),
    ],
)  # fmt: skip
def test_bad_csv_is_one_error_naming_the_line(db: Path, tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "bad.csv").write_bytes(text.encode())
    assert_cli_error(run(db, "import", str(tmp_path / "bad.csv"), "--site", "shop"), expected)
    assert count(db, "pageviews") == 0


def test_csv_line_numbers_follow_records_over_several_lines(db: Path, tmp_path: Path) -> None:
    text = 'type,ts,visitor,path,utm_term\npageview,2025-06-01T10:00:00Z,v,/,"two\nlines"\npageview,x,v,/,\n'
    (tmp_path / "multi.csv").write_text(text)
    assert_cli_error(run(db, "import", str(tmp_path / "multi.csv"), "--site", "shop"), "line 4: ts:")


def test_stdin_and_gzip(db: Path, tmp_path: Path) -> None:
    result = run(db, "import", "-", "--site", "shop", "--silent", input=ndjson([GOOD]))
    assert result.exit_code == 0, result.output
    with gzip.open(tmp_path / "e.csv.gz", "wt") as fh:
        fh.write(as_csv([pv("2025-06-01T11:00:00Z", "/gz")]))
    result = run(db, "import", str(tmp_path / "e.csv.gz"), "--site", "shop", "--silent")
    assert result.exit_code == 0, result.output
    assert rows(db, "pageviews", "path") == [("/",), ("/gz",)]
    result = run(
        db,
        "import",
        "-",
        "--site",
        "shop",
        "--format",
        "csv",
        input=as_csv([pv("2025-06-01T12:00:00Z", "/in")]),
    )
    assert result.exit_code == 0 and count(db, "pageviews") == 3


def test_blank_lines_are_skipped_but_counted(db: Path, tmp_path: Path) -> None:
    (tmp_path / "b.ndjson").write_text("\n" + json.dumps(GOOD) + "\n  \n" + "oops\n")
    assert_cli_error(
        run(db, "import", str(tmp_path / "b.ndjson"), "--site", "shop"), "line 4: not valid JSON"
    )


def test_progress_bars_and_summary_go_to_stderr(db: Path, tmp_path: Path) -> None:
    result = run(db, "import", str(write(tmp_path / "p.ndjson", [GOOD])), "--site", "shop")
    assert result.exit_code == 0 and result.stdout == ""
    assert "Reading" in result.stderr and "Checking" in result.stderr and "Importing" in result.stderr
    assert "Imported 1 events (1 new visits, 1 page views" in result.stderr
    silent = run(
        db,
        "import",
        str(write(tmp_path / "q.ndjson", [pv("2025-06-01T11:00:00Z")])),
        "--site",
        "shop",
        "--silent",
    )
    assert silent.exit_code == 0 and silent.output == ""


def test_import_help_has_an_example() -> None:
    result = CliRunner().invoke(cli, ["import", "--help"])
    assert "Example:" in result.output and "--skip-invalid" in result.output


# --- Keys --------------------------------------------------------------------------------------


def test_keys_create_scope(db: Path) -> None:
    write_key = run(db, "keys", "create", "--site", "shop", "--scope", "write").stdout.strip()
    read_key = run(db, "keys", "create", "--site", "shop").stdout.strip()
    conn = connect(db)
    assert [k.scope for k in accounts.list_keys(conn)] == ["write", "read"]
    assert accounts.authenticate(conn, write_key, scope="write").name == "shop"
    assert accounts.authenticate(conn, read_key, scope="read").name == "shop"
    conn.close()
    assert_cli_error(run(db, "keys", "create", "--site", "shop", "--scope", "admin"), "'admin' is not one of")
    assert "--scope write" in CliRunner().invoke(cli, ["keys", "create", "--help"]).output


def test_existing_keys_become_read_only(tmp_path: Path) -> None:
    """A database made before scopes existed: its keys get 'read' on migration."""
    import sqlite_utils

    from sealexports.storage.schema import migrations

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    names = [m.name for m in migrations._migrations]
    assert (
        names.index("m004_key_scopes") > names.index("m003_import_ids") > names.index("m002_estimate_catalog")
    )
    migrations.apply(db, stop_before="m003_import_ids")
    conn.execute("INSERT INTO accounts (name, plan, created_at) VALUES ('a', 'free', 'now')")
    conn.execute(
        "INSERT INTO api_keys (account_id, prefix, key_hash, created_at) VALUES (1, 'p', 'h', 'now')"
    )
    conn.commit()
    conn.close()
    conn = connect(path)
    assert conn.execute("SELECT scope FROM api_keys").fetchall() == [("read",)]
    conn.close()


def test_the_json_schema_names_exactly_the_fields_of_the_format() -> None:
    from sealexports.ingest.event_format import FIELDS, KINDS

    schema = json.loads((Path(__file__).parent.parent / "docs" / "events.schema.json").read_text())
    assert set(schema["properties"]) == FIELDS
    assert schema["additionalProperties"] is False
    assert schema["properties"]["type"]["enum"] == list(KINDS)
