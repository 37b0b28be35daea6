"""The benchmark's data: one SQLite file seeded with demo traffic (reused by later runs), what it
holds, and how many rows each export of it should give (counted by SQLite, not by a writer)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmark.console import log
from sealexports import demo
from sealexports.exports.queries import export_query
from sealexports.exports.request import ExportRequest, build_request
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import InsertCounts, insert_visits

SITE = "demo"
TIMEZONE = "Europe/Madrid"
END = date(2025, 6, 30)  # fixed, so that a cached database is the same data
SEED = 42

DEFAULT_VISITS = 3_700_000  # ~2.7 page views and ~0.28 microconversions a visit
DEFAULT_DAYS = 30
QUICK_VISITS, QUICK_DAYS = 2_000, 3
MIN_PAGEVIEWS, MIN_MICRO = 2_000_000, 1_000_000  # the spec's size

AGGREGATES = (
    "pages", "sources", "mediums", "campaigns", "terms", "countries", "devices", "browsers", "os",
    "time_series", "landing_pages",
)  # fmt: skip
ESTIMATED = ("conversions", "microconversions", "sources", "pages")
SMALL, LARGE = "~10k rows", "~1M rows"  # the memory measure's two exports
IMPORT_OURS, IMPORT_REFERENCE = "sealexports import", "sqlite-utils insert"  # the import measure's
MIB = 1024 * 1024


@dataclass
class Seeding:
    counts: InsertCounts
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.counts.rows / self.seconds

    @property
    def meta(self) -> dict[str, Any]:
        return {**asdict(self.counts), "seconds": self.seconds}


class Data:
    """`<folder>/bench-{visits}-{days}.db`: the demo site's traffic over the days ending END."""

    def __init__(self, folder: Path, visits: int, days: int) -> None:
        self.db = folder / f"bench-{visits}-{days}.db"
        self.visits, self.days = visits, days
        self.date_to = END
        self.date_from = END - timedelta(days=days - 1)
        self.last30_from = END - timedelta(days=min(30, days) - 1)
        self._expected: dict[str, int] = {}

    def prepare(self, reseed: bool) -> Seeding | None:
        """Seed the file, or bring an existing one up to date; how seeding went, if it seeded."""
        seeding = None
        if self.db.exists() and not reseed:
            log(f"data: reusing {self.db} (--reseed to seed it again)")
            self.migrate()
        else:
            seeding = self.seed()
        # Two background jobs at once (the HTTP measure runs two big exports).
        self.query("UPDATE accounts SET plan = 'enterprise'")
        return seeding

    def migrate(self) -> None:
        """Bring a cached data file up to the current schema (the engine may have changed)."""
        count = "SELECT COUNT(*) FROM _sqlite_migrations"
        before = self.query(count)[0][0]
        started = time.perf_counter()
        with contextlib.closing(connect(self.db)) as conn:
            if (applied := conn.execute(count).fetchone()[0] - before) > 0:
                elapsed = time.perf_counter() - started
                log(f"data: applied {applied} new migration(s) in {elapsed:.1f} s; running ANALYZE")
                conn.execute("ANALYZE")

    def seed(self) -> Seeding:
        """generate() + insert_visits() in one transaction, into a temporary file renamed when done."""
        tmp = self.db.with_name(self.db.name + ".tmp")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        visits = self.visits
        log(f"data: seeding {visits:,} visits over {self.days} days into {self.db} ...")
        conn = connect(tmp)
        site = accounts.create_site(conn, SITE, name="Bench site", timezone=TIMEZONE, plan="enterprise")
        step = max(1, visits // 10)
        shown = 0

        def progress(c: InsertCounts) -> None:
            nonlocal shown
            if c.visits - shown >= step:
                shown = c.visits
                log(f"  seeding: {c.visits:,}/{visits:,} visits")

        visit_iter = demo.generate(TIMEZONE, end=END, days=self.days, visits=visits, seed=SEED)
        started = time.perf_counter()
        with transaction(conn):
            counts = insert_visits(conn, site, visit_iter, progress=progress)
        seeding = Seeding(counts, time.perf_counter() - started)
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        os.replace(tmp, self.db)
        log(f"data: seeded {counts.rows:,} rows in {seeding.seconds:.1f} s "
            f"({seeding.rows_per_second:,.0f} rows/s)")  # fmt: skip
        return seeding

    def describe(self) -> dict[str, Any]:
        """What the range holds, and whether it is as big as the spec asks; logged too."""
        # Within the range: a few late visits spill past midnight of its last day.
        window = [SITE, self.date_from.isoformat(), self.date_to.isoformat()]
        count = "SELECT COUNT(*) FROM {} WHERE site_id = ? AND day BETWEEN ? AND ?"
        visits, pageviews = (self.query(count.format(t), window)[0][0] for t in ("visits", "pageviews"))
        micro = self.expected_rows(self.request("microconversions", "csv"))
        days = self.days
        ok = pageviews >= MIN_PAGEVIEWS and days >= 30 and micro >= MIN_MICRO
        log(
            f"data: {visits:,} visits, {pageviews:,} page views over {days} days, {micro:,} microconversions "
            f"({'meets' if ok else 'is BELOW'} the spec's >= {MIN_PAGEVIEWS:,} page views over >= 30 days "
            f"and >= {MIN_MICRO:,} microconversions)"
        )
        return {"visits": visits, "pageviews": pageviews, "days": days, "microconversions": micro,
                "meets_spec_size": ok}  # fmt: skip

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """All rows of one statement, on a connection of its own (autocommit)."""
        with contextlib.closing(sqlite3.connect(self.db, isolation_level=None)) as conn:
            return conn.execute(sql, params).fetchall()

    def request(
        self, export_type: str, fmt: str, date_from: date | None = None, filters: dict[str, str] | None = None
    ) -> ExportRequest:
        """An export of the demo site up to the last day (from the first day unless given)."""
        start = (date_from or self.date_from).isoformat()
        return build_request(SITE, export_type, fmt, start, self.date_to.isoformat(), filters or {})

    def expected_rows(self, req: ExportRequest) -> int:
        """Rows of the request's own SQL, counted by SQLite (independently of any writer)."""
        sql = inline_sql(*export_query(req))
        if sql not in self._expected:
            self._expected[sql] = self.query(f"SELECT COUNT(*) FROM ({sql})")[0][0]
        return self._expected[sql]


def sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def inline_sql(sql: str, params: Sequence[object]) -> str:
    """The query with its parameters as literals (our SQL has no '?' other than placeholders)."""
    parts = sql.split("?")
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(parts) - 1} placeholders for {len(params)} parameters")
    out = [parts[0]]
    for value, rest in zip(params, parts[1:], strict=True):
        out += [sql_literal(value), rest]
    return "".join(out)


def count_rows(path: Path, fmt: str) -> int:
    r"""Data rows of a CSV file (lines but the header) or of a JSON array with one object a line
    (ours writes `[\n{..},\n{..}\n]`, the sqlite3 shell `[{..},\n{..}]`). No field has a newline."""
    newlines = objects = 0
    first = last = b""
    with open(path, "rb") as f:
        while chunk := f.read(16 * MIB):
            first = first or chunk[:2]
            newlines += chunk.count(b"\n")
            objects += (last + chunk[:1]).count(b"\n{") + chunk.count(b"\n{")
            last = chunk[-1:]
    if fmt == "csv":
        return max(0, newlines + (last not in (b"", b"\n")) - 1)
    return objects + (first == b"[{")


def size(path: Path) -> str:
    return f"{path.stat().st_size / MIB:,.1f} MiB"
