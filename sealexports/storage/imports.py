"""What ingestion reads and writes besides the events: the ids of events taken in, each visit
key's latest visit, and the staging tables an import sorts its events in.

Staging lives in the connection's temporary database (a file, not memory): an import of any
size holds only a window of events in memory, and other connections never see it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sealexports.storage.visits import VISIT_DIMENSIONS

# A staged event: what it sorts on, its id, and the rest of it as one JSON array (`payload`):
# one bound value instead of sixteen makes staging about twice as fast.
STAGED_COLUMNS = ("line", "key", "ts", "rank", "event_id", "payload")
_COLS = ", ".join(STAGED_COLUMNS)
_PARAMS = 500  # bound parameters per IN (...) query


@dataclass(frozen=True, slots=True)
class StoredVisit:
    """A visit key's latest visit, as far as continuing it goes."""

    key: str
    visit_id: int
    started_at: float  # POSIX seconds
    last_ts: float
    landing_page: str
    content_grouping: str | None
    dims: tuple[str | None, ...]  # VISIT_DIMENSIONS, in order


def _chunks(items: Sequence[object], n: int = _PARAMS) -> Iterable[Sequence[object]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def known_ids(conn: sqlite3.Connection, site_id: str, event_ids: Sequence[bytes]) -> set[bytes]:
    """Which of these event ids the site has taken in already."""
    found: set[bytes] = set()
    for chunk in _chunks(event_ids):
        marks = ", ".join("?" * len(chunk))
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT event_id FROM import_ids WHERE site_id = ? AND event_id IN ({marks})",
                [site_id, *chunk],
            )
        )
    return found


def record_ids(conn: sqlite3.Connection, site_id: str, event_ids: Iterable[bytes]) -> None:
    """Remember events taken in. A plain INSERT: an id taken twice is a bug, and fails loudly."""
    conn.executemany(
        "INSERT INTO import_ids (site_id, event_id) VALUES (?, ?)", [(site_id, e) for e in event_ids]
    )


_STORED = (
    "SELECT k.key, k.visit_id, k.started_at, k.last_ts, v.landing_page, v.content_grouping, "
    + ", ".join(f"v.{d}" for d in VISIT_DIMENSIONS)
    + " FROM visit_keys k JOIN visits v ON v.id = k.visit_id WHERE k.site_id = ? AND k.key IN ({})"
)


def stored_visits(conn: sqlite3.Connection, site_id: str, keys: Sequence[str]) -> dict[str, StoredVisit]:
    """The latest visit of each of these keys that has one."""
    out: dict[str, StoredVisit] = {}
    for chunk in _chunks(keys):
        for r in conn.execute(_STORED.format(", ".join("?" * len(chunk))), [site_id, *chunk]):
            out[r[0]] = StoredVisit(r[0], r[1], r[2], r[3], r[4], r[5], tuple(r[6:]))
    return out


def save_visit_keys(
    conn: sqlite3.Connection, site_id: str, rows: Iterable[tuple[str, int, float, float]]
) -> None:
    """(key, visit_id, started_at, last_ts): each key's latest visit."""
    conn.executemany(
        "INSERT INTO visit_keys (site_id, key, visit_id, started_at, last_ts) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (site_id, key) DO UPDATE SET visit_id = excluded.visit_id, "
        "started_at = excluded.started_at, last_ts = excluded.last_ts",
        [(site_id, *r) for r in rows],
    )


def optimize(conn: sqlite3.Connection) -> None:
    """After a bulk load: let SQLite refresh the statistics its query planner uses."""
    conn.execute("PRAGMA optimize")


class Staging:
    """Events of one import, staged in the connection's temporary database and read back
    sorted by (visit key, time, page views first, line), one window at a time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute("PRAGMA temp_store = FILE")  # big sorts spill to disk, not to memory
        conn.execute("DROP TABLE IF EXISTS temp.import_staged")
        conn.execute("DROP TABLE IF EXISTS temp.import_sorted")
        # No index: a second copy of an event in the same input is dropped by sort(), which
        # costs less than keeping an index of random ids up to date on every row.
        conn.execute(f"CREATE TEMP TABLE import_staged ({_COLS})")

    def add(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Stage events (rows in STAGED_COLUMNS order, in the order of the input)."""
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT INTO temp.import_staged VALUES (?, ?, ?, ?, ?, ?)", rows)
        self.conn.execute("COMMIT")

    def drop_known(self, site_id: str) -> int:
        """Unstage the events the site has taken in before; how many there were."""
        cur = self.conn.execute(
            "DELETE FROM temp.import_staged WHERE EXISTS (SELECT 1 FROM main.import_ids i "
            "WHERE i.site_id = ? AND i.event_id = import_staged.event_id)",
            [site_id],
        )
        return cur.rowcount

    def sort(self) -> int:
        """Copy the staged events in reading order (rowid = position), each event once (its
        first copy in the input); how many there are."""
        self.conn.execute(f"CREATE TEMP TABLE import_sorted ({_COLS})")
        self.conn.execute(
            f"INSERT INTO temp.import_sorted ({_COLS}) SELECT {_COLS} FROM temp.import_staged "
            "WHERE rowid IN (SELECT min(rowid) FROM temp.import_staged GROUP BY event_id) "
            "ORDER BY key, ts, rank, line"
        )
        self.conn.execute("DROP TABLE temp.import_staged")
        return int(self.conn.execute("SELECT count(*) FROM temp.import_sorted").fetchone()[0])

    def windows(self, size: int) -> Iterable[list[tuple[Any, ...]]]:
        """The sorted events as (line, key, ts, event_id, payload), `size` at a time: one short
        query each, no cursor held open."""
        return self._pages("line, key, ts, event_id, payload", size)

    def checks(self, size: int) -> Iterable[list[tuple[Any, ...]]]:
        """What a dry run of the stitching needs, in the same order: (line, key, ts, rank, and
        the payload of events other than page views, whose kind it holds)."""
        return self._pages("line, key, ts, rank, CASE WHEN rank THEN payload END", size)

    def _pages(self, columns: str, size: int) -> Iterable[list[tuple[Any, ...]]]:
        last = 0
        while True:
            rows = self.conn.execute(
                f"SELECT rowid, {columns} FROM temp.import_sorted WHERE rowid > ? ORDER BY rowid LIMIT ?",
                [last, size],
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[1:] for r in rows]

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.conn.execute("DROP TABLE IF EXISTS temp.import_staged")
        self.conn.execute("DROP TABLE IF EXISTS temp.import_sorted")
