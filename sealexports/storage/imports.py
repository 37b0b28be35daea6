"""What ingestion reads and writes besides the events: the ids of events taken in, each visit
key's latest visit, and the staging tables an import sorts its events in.

Staging lives in files of a private temporary folder, attached to the import's connection (not
memory): an import of any size holds only a window of events in memory, and the import's
second process (ingest/helper.py) can stage its half of the lines and read the sorted events.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
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


def open_staging(path: str) -> sqlite3.Connection:
    """A connection to a staging file of one process: no journal, no syncs (it dies with the
    import), holding `import_staged`."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(f"CREATE TABLE IF NOT EXISTS import_staged ({_COLS})")
    return conn


def stage(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]], schema: str = "main") -> None:
    """Stage events (rows in STAGED_COLUMNS order, in the order of the input)."""
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO {schema}.import_staged VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")


class Staging:
    """Events of one import, staged in a file of a private temporary folder (attached to the
    connection as `staging`), and read back sorted by (visit key, time, page views first, line),
    one window at a time. A second process may stage events in files of its own (`attach`), and
    read the sorted events from `path`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.folder = tempfile.mkdtemp(prefix="sealexports-import-")
        self.path = os.path.join(self.folder, "staging.db")
        self.parts = ["staging"]
        conn.execute("PRAGMA temp_store = FILE")  # big sorts spill to disk, not to memory
        conn.execute("ATTACH DATABASE ? AS staging", [self.path])
        conn.execute("PRAGMA staging.journal_mode = OFF")
        conn.execute("PRAGMA staging.synchronous = OFF")
        # No index: a second copy of an event in the same input is dropped by sort(), which
        # costs less than keeping an index of random ids up to date on every row.
        conn.execute(f"CREATE TABLE staging.import_staged ({_COLS})")

    def file(self, name: str) -> str:
        """A path in the staging folder (for another process's part)."""
        return os.path.join(self.folder, name)

    def add(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Stage events (rows in STAGED_COLUMNS order, in the order of the input)."""
        stage(self.conn, rows, "staging")

    def attach(self, path: str) -> None:
        """Sort the events another process staged in `path` (see open_staging) with these."""
        name = f"part{len(self.parts)}"
        self.conn.execute(f"ATTACH DATABASE ? AS {name}", [path])
        self.parts.append(name)

    def sort(self, site_id: str, *, threads: int = 0) -> int:
        """Copy the staged events the site has not taken in before, each once (its first copy in
        the input: the lowest line), sorted; how many there are. `windows` reads them in that
        order (rowid = position). `threads`: SQLite's sorter may use that many more threads."""
        staged = " UNION ALL ".join(f"SELECT {_COLS} FROM {p}.import_staged" for p in self.parts)
        self.conn.execute(f"CREATE TABLE staging.import_sorted ({_COLS})")
        before = self.conn.execute("PRAGMA threads").fetchone()[0]
        self.conn.execute(f"PRAGMA threads = {int(threads)}")
        try:
            self.conn.execute(
                f"INSERT INTO staging.import_sorted ({_COLS}) SELECT {_COLS} FROM "
                f"(SELECT {_COLS}, min(line) FROM ({staged}) s WHERE NOT EXISTS (SELECT 1 FROM "
                "main.import_ids i WHERE i.site_id = ? AND i.event_id = s.event_id) GROUP BY event_id) "
                "ORDER BY key, ts, rank, line",
                [site_id],
            )
        finally:
            self.conn.execute(f"PRAGMA threads = {int(before)}")
        for p in self.parts:
            self.conn.execute(f"DROP TABLE {p}.import_staged")
        return int(self.conn.execute("SELECT count(*) FROM staging.import_sorted").fetchone()[0])

    def windows(self, size: int, after: int = 0) -> Iterable[list[tuple[Any, ...]]]:
        """The sorted events as (line, key, ts, event_id, payload), `size` at a time from
        position `after` on: one short query each, no cursor held open."""
        return sorted_pages(self.conn, "staging.import_sorted", WINDOW_COLUMNS, size, after)

    def checks(self, size: int) -> Iterable[list[tuple[Any, ...]]]:
        """What a dry run of the stitching needs, in the same order: (line, key, ts, rank, and
        the payload of events other than page views, whose kind it holds)."""
        return sorted_pages(self.conn, "staging.import_sorted", CHECK_COLUMNS, size)

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        for p in self.parts:
            self.conn.execute(f"DETACH DATABASE {p}")
        shutil.rmtree(self.folder, ignore_errors=True)


WINDOW_COLUMNS = "line, key, ts, event_id, payload"
CHECK_COLUMNS = "line, key, ts, rank, CASE WHEN rank THEN payload END"


def sorted_pages(
    conn: sqlite3.Connection, table: str, columns: str, size: int, after: int = 0
) -> Iterable[list[tuple[Any, ...]]]:
    """Rows of a sorted staging table `size` at a time, after position `after`, each page as
    (rowid, *columns)."""
    last = after
    while True:
        rows = conn.execute(
            f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?", [last, size]
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield rows
