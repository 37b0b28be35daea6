"""Raw exports are read a page at a time (raw.pages): runs of days, and parts of a big day cut
at an event. Whatever the page size, the bytes are those of the generic writers over plain rows
(the oracle), events sharing a timestamp included; and the pages read one snapshot. The day
catalog counts each day's odd events (a value to quote or guard), and pages of days without any
skip the check."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

from sealexports.exports import engine, raw
from sealexports.exports.request import ExportRequest, build_request
from sealexports.exports.types import EXPORT_TYPES
from sealexports.exports.writers import chunks_for
from sealexports.storage import accounts, schema
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits

VALUES = ["plain", "with,comma", 'a "quote"', "line\nbreak", "=1+1", None, "ünï ✓"]


def _visits(n: int) -> list[Visit]:
    """n visits over four days, three microconversions and a conversion each; every fourth
    visit's events share one timestamp, so a page can end between two events of the same second."""
    start = datetime(2025, 3, 1, 23, 0, tzinfo=UTC)
    visits = []
    for i in range(n):
        ts = start + timedelta(minutes=(i // 4) * 17)
        value = VALUES[i % len(VALUES)]
        micro = [Conversion(ts, f"step{k}", "/p", value, 0, '{"k":[1,2]}' if k else None) for k in range(3)]
        visits.append(
            Visit(
                pages=[PageView(ts, f"/p/{i % 5}", value)],
                utm_source=value,
                country="ES" if i % 3 else None,
                browser=VALUES[(i + 2) % len(VALUES)],
                conversions=[Conversion(ts, value or "purchase", "/p", value, i * 31 - 900, None)],
                microconversions=micro,
            )
        )
    return visits


def _database(path: Path, visits: int) -> sqlite3.Connection:
    """A database at `path` whose site "s" has `visits` visits of `_visits`."""
    conn = connect(path)
    site = accounts.create_site(conn, "s", timezone="Europe/Madrid")
    with transaction(conn):
        insert_visits(conn, site, _visits(visits))
    return conn


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pages") / "pages.db"
    _database(path, 1000).close()
    return path


def _oracle(req: ExportRequest, path: Path) -> bytes:
    conn = connect(path)
    try:
        return b"".join(chunks_for(req.format, req.type.columns, engine.rows(conn, req), formula_guard=True))
    finally:
        conn.close()


@pytest.mark.parametrize("page_rows", [1, 2, 7, 100, 2000])
@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("export_type", ["conversions", "microconversions"])
def test_any_page_size_gives_the_same_bytes(
    db: Path, monkeypatch: pytest.MonkeyPatch, page_rows: int, fmt: str, export_type: str
) -> None:
    monkeypatch.setattr(raw, "CHUNK_ROWS", page_rows)
    req = build_request("s", export_type, fmt, "2025-03-01", "2025-03-10")
    conn = connect(db)
    pages = list(raw.pages(conn, req))
    got = b"".join(engine.chunks(conn, req))
    conn.close()
    assert got == _oracle(req, db)
    if page_rows <= 7 and export_type == "microconversions":
        assert any(p.after is not None for p in pages)  # days were cut at an event
        # and between two events of the same second
        assert any(p.after is not None and p.upto is not None and p.after[0] == p.upto[0] for p in pages)


def test_filters_with_small_pages(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raw, "CHUNK_ROWS", 5)
    req = build_request("s", "microconversions", "csv", "2025-03-01", "2025-03-10", {"country": "ES"})
    conn = connect(db)
    got = b"".join(engine.chunks(conn, req))
    conn.close()
    assert got == _oracle(req, db)
    assert got.count(b"\r\n") > 100


def test_a_catalog_that_is_behind_changes_nothing_but_page_sizes(tmp_path: Path) -> None:
    path = tmp_path / "behind.db"
    conn = _database(path, 300)
    req = build_request("s", "microconversions", "csv", "2025-03-01", "2025-03-10")
    expected = _oracle(req, path)
    with transaction(conn):
        conn.execute("DELETE FROM day_rows")  # no counts at all: one page for the whole range
    assert [(p.first, p.last) for p in raw.pages(conn, req)] == [("2025-03-01", "2025-03-10")]
    assert b"".join(engine.chunks(conn, req)) == expected
    conn.close()


def test_the_pages_read_one_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events stored while an export runs are not in it, even on days it has not reached yet."""
    monkeypatch.setattr(raw, "CHUNK_ROWS", 50)
    path = tmp_path / "snap.db"
    conn = _database(path, 400)
    site = accounts.get_site(conn, "s")
    req = build_request("s", "microconversions", "csv", "2025-03-01", "2025-03-10")
    expected = _oracle(req, path)
    chunks = engine.chunks(conn, req)
    got = [next(chunks), next(chunks)]
    writer = connect(path)
    noon = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
    later = [Visit(pages=[PageView(noon, "/late")], microconversions=[Conversion(noon, "late", "/late")])]
    with transaction(writer):
        insert_visits(writer, site, later)
    writer.close()
    got += list(chunks)
    assert b"".join(got) == expected
    assert b"late" in b"".join(engine.chunks(conn, req))  # a new export sees it
    conn.close()


# Odd values, each in another field of a visit or an event, on some visits only.
ODD = [
    ("utm_term", "a,b"),
    ("browser", "-x"),
    ("landing", "/line\nbreak"),
    ("conversion_type", "@sum"),
    ("content_grouping", 'say "hi"'),
    ("amount", "-250"),
    ("country", "\tES"),
    ("path", "/a\rb"),
]


def _mostly_plain(n: int) -> list[Visit]:
    """n visits over ten days, a conversion and two microconversions each; every 23rd visit
    has one odd value (ODD, in turn), so some days have odd events and others none."""
    start = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    visits = []
    for i in range(n):
        ts = start + timedelta(minutes=i * 71)
        field, value = ODD[(i // 23) % len(ODD)] if i % 23 == 0 else ("", "")
        conversion = Conversion(
            ts,
            value if field == "conversion_type" else "purchase",
            value if field == "path" else "/buy",
            value if field == "content_grouping" else None,
            int(value) if field == "amount" else 1999,
        )
        visits.append(
            Visit(
                pages=[PageView(ts, value if field == "landing" else "/home")],
                utm_source="news",
                utm_term=value if field == "utm_term" else None,
                country=value if field == "country" else "ES",
                browser=value if field == "browser" else "Firefox",
                conversions=[conversion],
                microconversions=[Conversion(ts, "step", "/s", None, 0, '{"k": "a,b"}'), conversion],
            )
        )
    return visits


def _odd_by_hand(conn: sqlite3.Connection) -> Counter[tuple[str, str]]:
    """(kind, day): the stored events with a value before the last CSV column that has a comma,
    a quote, CR or LF, or starts with = + - @ or tab; counted in Python over the rows."""
    found: Counter[tuple[str, str]] = Counter()
    stored = {"date": "day", "timestamp": "ts", "amount": "amount_cents"}
    for kind in ("conversions", "microconversions"):
        head = [stored.get(c.name, c.name) for c in EXPORT_TYPES[kind].columns[:-1]]
        for day, *values in conn.execute(f"SELECT day, {', '.join(head)} FROM {kind}"):
            texts = [v for v in values if isinstance(v, str)]
            odd = any(isinstance(v, int) and v < 0 for v in values) or any(
                any(ch in v for ch in ',"\r\n') or v[:1] in ("=", "+", "-", "@", "\t") for v in texts
            )
            found[(kind, day)] += odd
    return found


def _catalog(conn: sqlite3.Connection) -> Counter[tuple[str, str]]:
    return Counter(
        {(kind, day): odd for kind, day, odd in conn.execute("SELECT kind, day, odd FROM day_rows")}
    )


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "mixed.db"
    conn = connect(path)
    site = accounts.create_site(conn, "s", timezone="UTC")
    visits = _mostly_plain(200)
    with transaction(conn):
        insert_visits(conn, site, visits[:120])
    with transaction(conn):  # a second batch adds to the days of the first
        insert_visits(conn, site, visits[120:])
    conn.close()
    return path


def test_the_catalog_counts_each_days_odd_events(mixed: Path) -> None:
    conn = connect(mixed)
    by_hand = _odd_by_hand(conn)
    assert _catalog(conn) == by_hand
    conn.close()
    for kind in ("conversions", "microconversions"):
        odd = [by_hand[(k, d)] for k, d in by_hand if k == kind]
        assert 0 in odd and any(odd)  # days with and without odd events
    # Nine odd visits: a visit's value makes its three events odd (five such visits), an event's
    # value the conversion and the microconversion that repeats it (three), an amount one.
    assert sum(by_hand.values()) == 5 * 3 + 3 * 2 + 1


def test_the_migration_counts_them_in_data_stored_before(mixed: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(mixed) as source, sqlite3.connect(path) as old:
        source.backup(old)
        old.execute("ALTER TABLE day_rows DROP COLUMN odd")  # as before m016
    conn = connect(path, migrate=False)
    with transaction(conn):
        schema.m016_odd_rows(sqlite_utils.Database(conn))
    assert _catalog(conn) == _odd_by_hand(conn)
    conn.close()


@pytest.mark.parametrize("page_rows", [1, 4, 30, 2000])
@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("export_type", ["conversions", "microconversions"])
def test_pages_of_days_without_odd_events_are_plain_and_the_bytes_the_same(
    mixed: Path, monkeypatch: pytest.MonkeyPatch, page_rows: int, guard: bool, export_type: str
) -> None:
    monkeypatch.setattr(raw, "CHUNK_ROWS", page_rows)
    req = build_request("s", export_type, "csv", "2025-02-28", "2025-03-12", formula_guard=guard)
    conn = connect(mixed)
    by_hand = _odd_by_hand(conn)
    pages = list(raw.pages(conn, req))
    got = b"".join(engine.chunks(conn, req))
    expected = b"".join(chunks_for("csv", req.type.columns, engine.rows(conn, req), formula_guard=guard))
    conn.close()
    assert got == expected
    for page in pages:
        days = [(req.date_from + timedelta(days=i)).isoformat() for i in range(req.days)]
        covered = [d for d in days if page.first <= d <= page.last]
        known = all((export_type, d) in by_hand for d in covered)
        assert page.plain == (known and not any(by_hand[(export_type, d)] for d in covered)), page
    if page_rows < 2000:
        assert {p.plain for p in pages} == {True, False}
