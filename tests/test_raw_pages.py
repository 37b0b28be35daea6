"""Raw exports are read a page at a time (raw.pages): runs of days, and parts of a big day cut
at an event. Whatever the page size, the bytes are those of the generic writers over plain rows
(the oracle), events sharing a timestamp included; and the pages read one snapshot."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sealexports.exports import engine, raw
from sealexports.exports.request import ExportRequest, build_request
from sealexports.exports.writers import chunks_for
from sealexports.storage import accounts
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
