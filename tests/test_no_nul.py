"""Stored text never holds a NUL (SQLite's printf, which formats raw CSV exports, would end a
value there): `insert_visits` removes them, and migration m015 removes them from data stored
before, merging the rollup rows of values that differed only by a NUL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import overload

import pytest
import sqlite_utils

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage import accounts, schema, visits
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits

# Values that collide once their NULs are gone ("a\0" and "a"), and NULs where a CSV cell ends.
VALUES = ["a", "a\0", "\0a\0", "b", None, "\0", "buy\0,INJECTED", "x\0\0y"]
ROLLUPS_AND_EVENTS = [
    "visits", "pageviews", "conversions", "microconversions", "day_keys", "day_metrics",
    "day_groups", "pages",
]  # fmt: skip


class _Fix:
    """A value as given, or (clean) without its NULs."""

    def __init__(self, clean: bool) -> None:
        self.clean = clean

    @overload
    def __call__(self, value: str) -> str: ...
    @overload
    def __call__(self, value: str | None) -> str | None: ...
    def __call__(self, value: str | None) -> str | None:
        if value is None or not self.clean:
            return value
        return "".join(ch for ch in value if ch != "\x00")


def _visits(clean: bool) -> list[Visit]:
    fix = _Fix(clean)
    start = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
    out = []
    for i in range(64):
        value = VALUES[i % len(VALUES)]
        other = VALUES[(i * 3 + 1) % len(VALUES)]
        ts = start + timedelta(hours=5 * i)
        path = fix(f"/p/{other or ''}")
        out.append(
            Visit(
                pages=[
                    PageView(ts, path, fix(value)),
                    PageView(ts + timedelta(minutes=1), fix(f"/q{value or ''}")),
                ],
                referrer=fix(value),
                utm_source=fix(other),
                utm_campaign=fix(value),
                country=fix(other),
                browser=fix(value),
                conversions=[Conversion(ts, fix(value or "buy"), path, fix(other), 100 + i, None)],
                microconversions=[Conversion(ts, fix(other or "cart"), path, None, 0, '{"n": 1}')],
            )
        )
    return out


def _dump(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row; a page's content group is the last one written, which a merge cannot know."""
    return {
        t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        for t in ROLLUPS_AND_EVENTS
        if t != "pages"
    } | {
        "pages": conn.execute("SELECT site_id, path, first_day, last_day FROM pages ORDER BY path").fetchall()
    }


def _stored_nuls(conn: sqlite3.Connection) -> int:
    found = 0
    for table in ROLLUPS_AND_EVENTS:
        for row in conn.execute(f"SELECT * FROM {table}"):
            found += sum(isinstance(v, str) and "\x00" in v for v in row)
    return found


def _db(path: Path, visits: list[Visit]) -> sqlite3.Connection:
    conn = connect(path)
    site = accounts.create_site(conn, "s", timezone="Europe/Madrid")
    with transaction(conn):
        insert_visits(conn, site, visits)
    return conn


def test_storage_removes_nul_as_it_writes(tmp_path: Path) -> None:
    written = _db(tmp_path / "written.db", _visits(clean=False))
    expected = _db(tmp_path / "expected.db", _visits(clean=True))
    assert _stored_nuls(written) == 0
    assert _dump(written) == _dump(expected)


def test_migration_removes_nul_from_data_stored_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:  # stored as before: NULs kept
        m.setattr(visits, "_drop_nul", lambda visit: None)
        old = _db(tmp_path / "old.db", _visits(clean=False))
    assert _stored_nuls(old) > 100
    expected = _db(tmp_path / "expected.db", _visits(clean=True))
    assert _dump(old) != _dump(expected)

    with transaction(old):
        schema.m015_no_nul(sqlite_utils.Database(old))

    assert _stored_nuls(old) == 0
    assert _dump(old) == _dump(expected)  # rollup rows of colliding values merged
    for fmt in ("csv", "json"):
        req = build_request("s", "conversions", fmt, "2025-05-01", "2025-05-31")
        assert b"".join(engine.chunks(old, req)) == b"".join(engine.chunks(expected, req))
    req = build_request("s", "conversions", "csv", "2025-05-01", "2025-05-31")
    assert b',"buy,INJECTED",' in b"".join(engine.chunks(old, req))
