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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sealexports.storage.visits import VISIT_DIMENSIONS

# A staged event: what it sorts on, its id, and the rest of it as one JSON array (`payload`):
# one bound value instead of sixteen makes staging about twice as fast; `named`: 1 when its id
# is a digest of its own `id` field, 0 when of its content.
STAGED_COLUMNS = ("line", "key", "ts", "rank", "event_id", "payload", "named")
_COLS = ", ".join(STAGED_COLUMNS)
_SORTED = ", ".join(STAGED_COLUMNS[:-1])
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
    conn.executemany(f"INSERT INTO {schema}.import_staged VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
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
        """Copy the staged events the site has not taken in before, sorted; how many there are.
        `windows` and `checks` read them in that order (rowid = position), each event once:
        its first copy in the input. Copies of an event with an `id` are dropped here (the
        lowest line is kept); copies of one without have the same content, so they sort
        together (the same key and time, the lowest line first) and `sorted_pages` drops them
        as they are read: cheaper than grouping every event by its id in the sort.
        `threads`: SQLite's sorter may use that many more threads."""
        staged = " UNION ALL ".join(f"SELECT {_COLS} FROM {p}.import_staged" for p in self.parts)
        self.conn.execute(f"CREATE TABLE staging.import_sorted ({_SORTED})")
        before = self.conn.execute("PRAGMA threads").fetchone()[0]
        self.conn.execute(f"PRAGMA threads = {int(threads)}")
        try:
            self.conn.execute(
                f"INSERT INTO staging.import_sorted ({_SORTED}) SELECT {_SORTED} FROM ({staged}) s "
                f"WHERE (NOT named OR line IN (SELECT min(line) FROM ({staged}) WHERE named "
                "GROUP BY event_id)) AND NOT EXISTS (SELECT 1 FROM main.import_ids i "
                "WHERE i.site_id = ? AND i.event_id = s.event_id) ORDER BY key, ts, rank, line",
                [site_id],
            )
        finally:
            self.conn.execute(f"PRAGMA threads = {int(before)}")
        for p in self.parts:
            self.conn.execute(f"DROP TABLE {p}.import_staged")
        return int(self.conn.execute("SELECT count(*) FROM staging.import_sorted").fetchone()[0])

    def windows(self, size: int, after: int = 0) -> Iterator[Page]:
        """The sorted events as (position, line, key, ts, event_id, payload), `size` at a time
        from position `after` on: one short query each, no cursor held open."""
        return sorted_pages(self.conn, "staging.import_sorted", WINDOW_COLUMNS, size, after)

    def checks(self, size: int) -> Iterator[Page]:
        """What a dry run of the stitching needs, in the same order: (position, line, key, ts,
        event_id, rank, and the payload of events other than page views, whose kind it holds)."""
        return sorted_pages(self.conn, "staging.import_sorted", CHECK_COLUMNS, size)

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        for p in self.parts:
            self.conn.execute(f"DETACH DATABASE {p}")
        shutil.rmtree(self.folder, ignore_errors=True)


WINDOW_COLUMNS = "line, key, ts, event_id, payload"
CHECK_COLUMNS = "line, key, ts, event_id, rank, CASE WHEN rank THEN payload END"


@dataclass(frozen=True, slots=True)
class Page:
    """`size` events read from the sorted table, each once (fewer at the end)."""

    rows: list[tuple[Any, ...]]  # (position, line, key, ts, event_id, ...)
    last: int  # the position of the last row read
    read: int  # rows read: the events and the later copies dropped


def sorted_pages(
    conn: sqlite3.Connection, table: str, columns: str, size: int, after: int = 0
) -> Iterator[Page]:
    """The events of a sorted staging table, `size` at a time after position `after`, the
    later copies of each dropped (see Staging.sort): the same windows as if the sort had
    dropped them."""
    copies = _Copies()
    last = after
    while True:
        rows: list[tuple[Any, ...]] = []
        read = 0
        while len(rows) < size:
            more = conn.execute(
                f"SELECT rowid, {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                [last, size - len(rows)],
            ).fetchall()
            if not more:
                break
            last = more[-1][0]
            read += len(more)
            rows += copies.drop(more)
        if not read:
            return
        yield Page(rows, last, read)


class _Copies:
    """Drops the later copies of events without an id of their own, row after row (see
    Staging.sort): they come next to each other with the same key and time."""

    def __init__(self) -> None:
        self._at: tuple[str, float] | None = None  # the key and time of the rows before
        self._ids: set[bytes] = set()  # and their ids

    def drop(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        kept = []
        at, ids = self._at, self._ids
        for r in rows:
            if (r[2], r[3]) != at:
                at, ids = (r[2], r[3]), {r[4]}
            elif r[4] in ids:
                continue
            else:
                ids.add(r[4])
            kept.append(r)
        self._at, self._ids = at, ids
        return kept
