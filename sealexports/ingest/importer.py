"""Taking events in: a whole file (`import_events`) or one HTTP batch (`ingest_batch`).

Both check every event, skip those taken in before, stitch the rest into visits and write
them with `insert_visits`, recording each event's id and each visit key's latest visit in the
same transaction as its rows.

A file goes through three passes over bounded memory. 1: read and check every record, staging
the good ones in the temporary database (the input is read once: stdin works). 2 (unless
skip_invalid): stitch the sorted events without writing, to find events with no visit to join.
3: stitch again and write, one transaction per window of events. Any bad line in pass 1 or 2
stops the import before it writes anything, unless skip_invalid.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sealexports.errors import InvalidEvents, Problem, TooLarge
from sealexports.ingest.event_format import Event, EventError, parse_event
from sealexports.ingest.readers import Item
from sealexports.ingest.stitcher import Checked, Checker, Stitched, Stitcher
from sealexports.storage import imports
from sealexports.storage.accounts import Site
from sealexports.storage.database import transaction
from sealexports.storage.visits import InsertCounts, insert_visits

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


def _stage_row(e: Event) -> tuple[object, ...]:
    """The event as storage.imports.STAGED_COLUMNS: the rest of its fields as a JSON array."""
    payload = orjson.dumps(
        (e.kind, e.path, e.referrer, e.utm_source, e.utm_medium, e.utm_campaign, e.utm_term,
         e.utm_content, e.country, e.device_type, e.browser, e.os, e.content_grouping,
         e.conversion_type, e.amount_cents, e.properties)
    )  # fmt: skip
    return (e.line, e.key, e.ts, e.rank, e.event_id, payload)


def _unstage(rows: Iterable[tuple[Any, ...]]) -> list[Event]:
    events = []
    for line, key, ts, event_id, payload in rows:
        p = orjson.loads(payload)
        events.append(Event(line, p[0], ts, key, event_id, *p[1:]))
    return events


def _checked(rows: Iterable[tuple[Any, ...]]) -> list[Checked]:
    """Staged rows (Staging.checks) as the checker takes them: page views rank first, and the
    other events' kind is the first item of their payload."""
    return [(line, key, ts, orjson.loads(p)[0] if rank else "pageview") for line, key, ts, rank, p in rows]


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


def import_events(
    conn: sqlite3.Connection,
    site: Site,
    items: Iterable[Item],
    *,
    skip_invalid: bool = False,
    window: int = WINDOW,
    progress: Progress | None = None,
) -> ImportReport:
    """Import events read from a file. Raises InvalidEvents (having written nothing) when any
    is bad, unless `skip_invalid`: then the good ones are imported and the report lists the rest."""
    report = ImportReport()
    log = ErrorLog()
    tick = progress or (lambda phase, done, total: None)
    staging = imports.Staging(conn)
    try:
        rows: list[tuple[object, ...]] = []
        for item in _fatal_as_invalid(items):
            report.records += 1
            if item.data is None:
                log.add(Problem(None, item.error or "bad record", item.line))
                continue
            try:
                rows.append(_stage_row(parse_event(item.data, item.line)))
            except EventError as e:
                log.add(e.at(item.line))
                continue
            if len(rows) >= window:
                staging.add(rows)
                rows = []
                tick("read", report.records, None)
        staging.add(rows)
        report.invalid = log.count
        valid = report.records - report.invalid
        if log.count and not skip_invalid:
            raise _fail(log)
        tick("read", report.records, None)
        staging.drop_known(site.site_id)
        total = staging.sort()
        report.duplicates = valid - total  # twice in the input, or taken in before

        if not skip_invalid:  # a dry run: find events with no visit before writing any
            checker = Checker(_lookup(conn, site))
            done = 0
            for rows_ in staging.checks(window):
                for r in checker.window(_checked(rows_)):
                    log.add(r)
                done += len(rows_)
                tick("check", done, total)
            if log.count:
                raise _fail(log)

        stitcher = Stitcher(_lookup(conn, site))
        done = 0
        for rows_ in staging.windows(window):
            with transaction(conn):
                written = write_window(conn, site, stitcher, _unstage(rows_))
            _add(report.counts, written.counts)
            report.duplicates += written.duplicates
            report.imported += len(written.stitched.accepted)
            for r in written.stitched.rejected:
                log.add(r)
            done += len(rows_)
            tick("write", done, total)
        report.rejected = log.count - report.invalid
        report.errors = log.first()
        if report.counts.visits:
            imports.optimize(conn)
        return report
    finally:
        staging.close()


def _add(total: InsertCounts, more: InsertCounts) -> None:
    total.visits += more.visits
    total.pageviews += more.pageviews
    total.conversions += more.conversions
    total.microconversions += more.microconversions


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
