"""Taking events in: a whole file (`import_events`) or one HTTP batch (`ingest_batch`).

Both check every event, skip those taken in before, stitch the rest into visits and write
them with `insert_visits`, recording each event's id and each visit key's latest visit in the
same transaction as its rows.

A file goes through three passes over bounded memory. 1: read and check every record, staging
the good ones in the temporary database (the input is read once: stdin works). 2 (unless
skip_invalid): stitch the sorted events without writing, to find events with no visit to join.
3: stitch again and write, one transaction per window of events. Any bad line in pass 1 or 2
stops the import before it writes anything, unless skip_invalid.

On the command line (`processes=2`) a second process (helper.py) checks every other block of
NDJSON lines in pass 1, and in pass 3 stitches and builds each window's rows while this one
writes the window before (and runs pass 2 meanwhile); only this one writes to the database.
"""

from __future__ import annotations

import gc
import heapq
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from sealexports.errors import InvalidEvents, Problem, TooLarge
from sealexports.ingest.event_format import Event, EventError, parse_event
from sealexports.ingest.readers import Item, NdjsonLines, ndjson_items
from sealexports.ingest.stitcher import Checked, Checker, Stitched, Stitcher
from sealexports.storage import imports
from sealexports.storage.accounts import Site
from sealexports.storage.database import data_version, database_file, transaction
from sealexports.storage.visits import InsertCounts, add_counts, insert_visits, write_rows

if TYPE_CHECKING:
    from sealexports.ingest.helper import Built, Helper

WINDOW = 5000  # events per window (and per transaction) of a file import
BATCH_MAX_EVENTS = 10_000  # events in one HTTP batch
MAX_REPORTED = 100  # bad lines kept for the report (all are counted)
SHOWN = 5  # bad lines named in the error message
Progress = Callable[[str, int, int | None], None]  # (phase, done, total)


class ErrorLog:
    """The first MAX_REPORTED rejections by line, and a count of all: memory stays bounded."""

    def __init__(self, keep: int = MAX_REPORTED) -> None:
        self.keep = keep
        self.count = 0
        self._heap: list[tuple[int, int, Problem]] = []  # max-heap on line, via negation

    def add(self, rejection: Problem) -> None:
        self.count += 1
        line = rejection.line or 0
        entry = (-line, self.count, rejection)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, entry)
        elif line < -self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def merge(self, count: int, first: list[Problem]) -> None:
        """Add another log's count and its first rejections."""
        for r in first:
            self.add(r)
        self.count += count - len(first)

    def first(self) -> list[Problem]:
        return [r for _, _, r in sorted(self._heap, key=lambda x: (-x[0], x[1]))]


@dataclass
class ImportReport:
    records: int = 0  # records read (blank lines aside)
    invalid: int = 0  # failed the checks
    rejected: int = 0  # valid, but with no visit to join (or out of order)
    duplicates: int = 0  # taken in before, or twice in the input
    imported: int = 0  # events written
    counts: InsertCounts = field(default_factory=InsertCounts)
    errors: list[Problem] = field(default_factory=list)  # the first bad lines, by line


@dataclass
class BatchReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Problem] = field(default_factory=list)  # by index
    counts: InsertCounts = field(default_factory=InsertCounts)


def stage_row(e: Event) -> tuple[object, ...]:
    """The event as storage.imports.STAGED_COLUMNS: the rest of its fields as a JSON array."""
    payload = orjson.dumps(
        (e.kind, e.path, e.referrer, e.utm_source, e.utm_medium, e.utm_campaign, e.utm_term,
         e.utm_content, e.country, e.device_type, e.browser, e.os, e.content_grouping,
         e.conversion_type, e.amount_cents, e.properties)
    )  # fmt: skip
    return (e.line, e.key, e.ts, e.rank, e.event_id, payload, int(e.named))


def staged(item: Item, log: ErrorLog) -> tuple[object, ...] | None:
    """Pass 1 on one item: its staged row (`stage_row`), or None with its problem in `log`."""
    if item.data is None:
        log.add(Problem(None, item.error or "bad record", item.line))
        return None
    try:
        return stage_row(parse_event(item.data, item.line))
    except EventError as e:
        log.add(e.at(item.line))
        return None


def unstage(rows: Iterable[tuple[Any, ...]]) -> list[Event]:
    """Sorted staged rows (Staging.windows: the position first) as events."""
    events = []
    for _, line, key, ts, event_id, payload in rows:
        p = orjson.loads(payload)
        events.append(Event(line, p[0], ts, key, event_id, *p[1:]))
    return events


def _checked(rows: Iterable[tuple[Any, ...]]) -> list[Checked]:
    """Staged rows (Staging.checks) as the checker takes them: page views rank first, and the
    other events' kind is the first item of their payload."""
    return [
        (line, key, ts, orjson.loads(p)[0] if rank else "pageview") for _, line, key, ts, _, rank, p in rows
    ]


def _fatal_as_invalid(items: Iterable[Item]) -> Iterator[Item]:
    """A reader's error about the input as a whole (a bad CSV header) stops the import."""
    try:
        yield from items
    except EventError as e:
        raise InvalidEvents(f"{e}; nothing was imported", problems=[], count=1) from None


def _fail(log: ErrorLog) -> InvalidEvents:
    first = log.first()
    shown = "; ".join(f"line {r.line}: {r}" for r in first[:SHOWN])
    more = log.count - min(len(first), SHOWN)
    tail = f"; and {more:,} more bad line{'s' if more > 1 else ''}" if more else ""
    return InvalidEvents(
        f"{shown}{tail}; nothing was imported",
        problems=first,
        count=log.count,
    )


@dataclass
class Written:
    stitched: Stitched
    duplicates: int
    counts: InsertCounts


def write_window(
    conn: sqlite3.Connection, site: Site, stitcher: Stitcher, events: Sequence[Event]
) -> Written:
    """Stitch and store one sorted window, skipping events taken in before. The caller owns
    the transaction."""
    known = imports.known_ids(conn, site.site_id, [e.event_id for e in events])
    if known:
        events = [e for e in events if e.event_id not in known]
    stitched = stitcher.window(events)
    counts = insert_visits(conn, site, stitched.visits, nul_free=True)  # parse_event refuses NUL
    imports.record_ids(conn, site.site_id, sorted(e.event_id for e in stitched.accepted))  # index order
    imports.save_visit_keys(
        conn,
        site.site_id,
        ((key, o.visit.id, o.started, o.last) for key, o in stitched.latest.items()),  # type: ignore[misc]
    )
    return Written(stitched, len(known), counts)


def _lookup(conn: sqlite3.Connection, site: Site) -> Callable[[list[str]], dict[str, imports.StoredVisit]]:
    return lambda keys: imports.stored_visits(conn, site.site_id, keys)


class _Run:
    """One import: its report, its bad lines, its progress, its staged events."""

    def __init__(self, conn: sqlite3.Connection, site: Site, window: int, progress: Progress | None) -> None:
        self.conn, self.site, self.window = conn, site, window
        self.report = ImportReport()
        self.log = ErrorLog()
        self.tick = progress or (lambda phase, done, total: None)
        self.staging = imports.Staging(conn)
        self.done = 0  # events of pass 3 so far
        self.total = 0  # events to write (known after the sort)

    def stage(self, items: Iterable[Item], rows: list[tuple[object, ...]]) -> None:
        """Pass 1 over these items: the good ones staged (`rows` holds those not staged yet)."""
        report, log = self.report, self.log
        for item in items:
            report.records += 1
            if (row := staged(item, log)) is None:
                continue
            rows.append(row)
            if len(rows) >= self.window:
                self.staging.add(rows)
                rows.clear()
                self.tick("read", report.records, None)
        self.staging.add(rows)
        rows.clear()

    def stage_split(self, lines: Iterable[bytes], helper: Helper) -> None:
        """Pass 1 of NDJSON lines on two processes: the helper takes five blocks of nine (this
        one also reads the input and hands them over), the first one first."""
        number = 1
        rows: list[tuple[object, ...]] = []
        it = iter(lines)
        for n, block in enumerate(iter(lambda: list(islice(it, self.window)), [])):
            if n % 9 not in (1, 3, 5, 7):
                helper.parse(number, block)
            else:
                self.stage(ndjson_items(block, first=number), rows)
            number += len(block)
            if len(block) == self.window:  # as `stage` does: no bar for an input of one window
                self.tick("read", self.report.records, None)
        parsed = helper.parsed()
        self.report.records += parsed.records
        self.log.merge(parsed.invalid, parsed.problems)
        self.staging.attach(helper.part)

    def check(self, between: Callable[[], None] = lambda: None) -> None:
        """Pass 2: a dry run of the stitching; raises for events with no visit to join."""
        checker = Checker(_lookup(self.conn, self.site))
        done = 0
        for page in self.staging.checks(self.window):
            for r in checker.window(_checked(page.rows)):
                self.log.add(r)
            done += page.read
            self.tick("check", done, self.total)
            between()
        if self.log.count:
            raise _fail(self.log)

    def write(self, stitcher: Stitcher, after: int = 0) -> None:
        """Pass 3 in this process, from position `after` on."""
        for page in self.staging.windows(self.window, after):
            with transaction(self.conn):
                written = write_window(self.conn, self.site, stitcher, unstage(page.rows))
            self.report.duplicates += written.duplicates + page.read - len(page.rows)
            self.wrote(page.read, written.counts, len(written.stitched.accepted), written.stitched.rejected)

    def write_split(self, helper: Helper, check: bool) -> None:
        """Pass 3 with the helper building the rows (and pass 2 meanwhile, if `check`)."""
        first_id, version = _start(self.conn)
        helper.build(first_id, self.window)
        ahead: deque[Built | None] = deque()  # built during the dry run (None: the last was)

        def receive() -> None:
            while len(ahead) < AHEAD and (not ahead or ahead[-1] is not None) and helper.ready():
                ahead.append(helper.next())

        if check:
            self.check(receive)
        after, carry = 0, None
        for b in _drain(ahead, helper):
            try:
                with transaction(self.conn):
                    if data_version(self.conn) != version:
                        raise _Moved
                    write_rows(self.conn, b.rows)
                    imports.record_ids(self.conn, self.site.site_id, b.ids)
                    imports.save_visit_keys(self.conn, self.site.site_id, b.keys)
            except _Moved:
                break
            after, carry = b.last, b.carry
            self.report.duplicates += b.copies
            self.wrote(b.events, b.rows.counts, b.accepted, b.rejected)
        else:
            return
        # Another connection has written: the rest is stitched and written here, as it would
        # have been without the helper, from the last window written.
        helper.close()
        stitcher = Stitcher(_lookup(self.conn, self.site))
        stitcher.carry = carry
        self.write(stitcher, after)

    def wrote(self, events: int, counts: InsertCounts, accepted: int, rejected: list[Problem]) -> None:
        add_counts(self.report.counts, counts)
        self.report.imported += accepted
        for r in rejected:
            self.log.add(r)
        self.done += events
        self.tick("write", self.done, self.total)


AHEAD = 4  # windows the helper may build ahead while the dry run goes on


class _Moved(Exception):
    """Another connection has committed since pass 3 started."""


def _start(conn: sqlite3.Connection) -> tuple[int, int]:
    """The first id new visits take, and the database's data version, read together."""
    conn.execute("BEGIN")
    try:
        first_id = int(conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM visits").fetchone()[0])
        return first_id, data_version(conn)
    finally:
        conn.execute("COMMIT")


def _drain(ahead: deque[Built | None], helper: Helper) -> Iterator[Built]:
    """The windows received ahead, then the rest as they come."""
    while ahead:
        if (b := ahead.popleft()) is None:
            return
        yield b
    while (b := helper.next()) is not None:
        yield b


def import_events(
    conn: sqlite3.Connection,
    site: Site,
    items: Iterable[Item],
    *,
    skip_invalid: bool = False,
    window: int = WINDOW,
    progress: Progress | None = None,
    processes: int = 1,
) -> ImportReport:
    """Import events read from a file. Raises InvalidEvents (having written nothing) when any
    is bad, unless `skip_invalid`: then the good ones are imported and the report lists the rest.

    `processes=2` (the command line; never in the server): a second process checks every other
    block of lines of an NDJSON input (`NdjsonLines`) in pass 1, and stitches and builds the
    rows of pass 3 while this one writes them. The tables end the same, row for row."""
    with _no_collections():
        return _import(conn, site, items, skip_invalid, window, progress, processes)


@contextmanager
def _no_collections() -> Iterator[None]:
    """The cyclic garbage collector off: an import makes no reference cycles (a whole file
    leaves none behind), and the collector kept traversing each window's events and rows: 25%
    of the second process's CPU. Reference counting frees everything as before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _import(
    conn: sqlite3.Connection,
    site: Site,
    items: Iterable[Item],
    skip_invalid: bool,
    window: int,
    progress: Progress | None,
    processes: int,
) -> ImportReport:
    run = _Run(conn, site, window, progress)
    report, log = run.report, run.log
    helper = None
    try:
        path = database_file(conn)
        if processes > 1 and path:
            from sealexports.ingest.helper import Helper

            helper = Helper(path, site, run.staging.path, run.staging.file("part1.db"))
        if helper is not None and isinstance(items, NdjsonLines):
            run.stage_split(items.lines, helper)
        else:
            run.stage(_fatal_as_invalid(items), [])
        report.invalid = log.count
        valid = report.records - report.invalid
        if log.count and not skip_invalid:
            raise _fail(log)
        run.tick("read", report.records, None)
        run.total = run.staging.sort(site.site_id, threads=processes - 1)
        report.duplicates = valid - run.total  # twice in the input, or taken in before

        if helper is not None:
            run.write_split(helper, check=not skip_invalid)
        else:
            if not skip_invalid:  # a dry run: find events with no visit before writing any
                run.check()
            run.write(Stitcher(_lookup(conn, site)))
        report.rejected = log.count - report.invalid
        report.errors = log.first()
        if report.counts.visits:
            imports.optimize(conn)
        return report
    finally:
        if helper is not None:
            helper.close()
        run.staging.close()


def ingest_batch(
    conn: sqlite3.Connection, site: Site, items: Iterable[Item], *, max_events: int = BATCH_MAX_EVENTS
) -> BatchReport:
    """Take in one batch in one transaction: the good events are written, each bad one is
    reported by its index. TooLarge (nothing written) over `max_events`."""
    report = BatchReport()
    events: list[Event] = []
    seen: set[bytes] = set()
    for n, item in enumerate(items, 1):
        if n > max_events:
            raise TooLarge(f"a batch takes at most {max_events:,} events; send the rest in another")
        if item.data is None:
            report.rejected.append(Problem(None, item.error or "bad event", item.line))
            continue
        try:
            event = parse_event(item.data, item.line)
        except EventError as e:
            report.rejected.append(e.at(item.line))
            continue
        if event.event_id in seen:
            report.duplicates += 1
            continue
        seen.add(event.event_id)
        events.append(event)
    events.sort(key=lambda e: (e.key, e.ts, e.rank, e.line))
    with transaction(conn):
        written = write_window(conn, site, Stitcher(_lookup(conn, site)), events)
    report.duplicates += written.duplicates
    report.accepted = len(written.stitched.accepted)
    report.rejected = sorted(report.rejected + written.stitched.rejected, key=lambda r: r.line or 0)
    report.counts = written.counts
    return report
