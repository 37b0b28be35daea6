"""Raw event exports (conversions, microconversions), formatted inside SQLite.

SQLite builds each CSV line or JSON object and hands over a page of them (up to CHUNK_ROWS
events) as one blob, so Python makes a few objects a page, never decodes or encodes text, and
the exporting thread holds the GIL only between pages. CSV lines come unquoted. A page of days
the day catalog counts no odd event on (`day_rows.odd`, kept as events are stored) is written as
it comes; any other page is checked for the characters that need quoting and for a field
starting with a formula sign (when the formula guard is on), and only the rows of a page that
has one are looked at one by one, the rows that need it written by the csv module. printf ends
a value at a NUL: stored text holds none (migration m015; `insert_visits` removes them).

Measured and dropped: splitting an export by day across two threads, each with its own connection
(1M rows: 2.40-2.49 s against 2.54-2.59 s in one). Two processes are faster: the command line does
that (`split.py`), a server does not.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sealexports.exports.queries import Page, event_line_query, event_page_query, event_row_query
from sealexports.exports.request import ExportRequest
from sealexports.exports.writers import CHUNK_ROWS, csv_line

Pieces = Generator[tuple[bytes, int], None, None]  # (bytes, rows in them)


_DASH_FIELD = re.compile(rb",-")


def _formula_in(heads: bytes) -> bool:
    """Whether a field starts with a formula sign (= + - @ tab; a line starts with the date, never
    one; a CR already sends a chunk to the csv module). A two-byte search is slow where commas
    are everywhere, so the signs rare anywhere are first looked for alone (memchr)."""
    if _DASH_FIELD.search(heads):  # `re` finds this pair faster than `in` does
        return True
    return any(s[1:] in heads and s in heads for s in (b",=", b",+", b",@", b",\t"))


def body(conn: sqlite3.Connection, req: ExportRequest) -> Iterator[tuple[bytes, int]]:
    """The rows: CSV lines ending in CRLF, or JSON objects each after ',\\n', a page at a time,
    all read in one snapshot."""
    with _snapshot(conn):
        for page in pages(conn, req):
            sql, params = event_page_query(req, page)
            data, heads, n = conn.execute(sql, params).fetchone()
            if not n:
                continue
            if req.format == "json" or page.plain or _plain_heads(req, heads, n):
                yield data, n
            else:
                yield b"".join(_csv_lines(conn, req, page)), n


def _plain_heads(req: ExportRequest, heads: bytes, n: int) -> bool:
    """Whether `n` CSV heads (joined by NULs) need no quoting and no formula guard."""
    commas = len(req.type.columns) - 1
    return (
        heads.count(b",") == commas * n
        and not (b'"' in heads or b"\r" in heads or b"\n" in heads)
        and not (req.formula_guard and _formula_in(heads))
    )


def _csv_lines(conn: sqlite3.Connection, req: ExportRequest, page: Page) -> Iterator[bytes]:
    """A page whose heads need quoting, row by row: only the rows that need it go through the
    csv module."""
    commas = len(req.type.columns) - 1
    for head, tail, row_id in conn.execute(*event_line_query(req, page)):
        yield _csv_line(conn, req, head, tail, row_id, commas)


def pages(conn: sqlite3.Connection, req: ExportRequest) -> Iterator[Page]:
    """The export's range in order, as runs of whole days of at most CHUNK_ROWS events (the day
    catalog's counts) and, for a day with more, parts of it of CHUNK_ROWS events each (their
    bounds found on the (site_id, day, ts) index). The pages cover every day of the range, so
    a catalog that is behind only changes a page's size. A page is plain if the catalog knows
    each of its days and counts no odd event in any; a day it does not know is not plain."""
    catalog = day_catalog(conn, req)
    first: str | None = None
    last = ""
    rows = 0
    plain = True
    for offset in range(req.days):
        day = (req.date_from + timedelta(days=offset)).isoformat()
        n, odd = catalog.get(day, (0, 1))
        if first is not None and (rows + n > CHUNK_ROWS or n > CHUNK_ROWS):
            yield Page(first, last, plain=plain)
            first, rows, plain = None, 0, True
        if n > CHUNK_ROWS:
            yield from _day_parts(conn, req, day, plain=not odd)
            continue
        if first is None:
            first = day
        last, rows, plain = day, rows + n, plain and not odd
    if first is not None:
        yield Page(first, last, plain=plain)


def day_catalog(conn: sqlite3.Connection, req: ExportRequest) -> dict[str, tuple[int, int]]:
    """The day catalog's (events, odd events) of the export's type per day of its range (before
    filters), in day order; days without events are missing."""
    rows = conn.execute(
        "SELECT day, rows, odd FROM day_rows WHERE site_id = ? AND kind = ? AND day BETWEEN ? AND ? "
        "ORDER BY day",
        [req.site_id, req.type.key, req.date_from.isoformat(), req.date_to.isoformat()],
    )
    return {day: (n, odd) for day, n, odd in rows}


def day_counts(conn: sqlite3.Connection, req: ExportRequest) -> dict[str, int]:
    """`day_catalog`'s events alone."""
    return {day: n for day, (n, _) in day_catalog(conn, req).items()}


def _day_parts(conn: sqlite3.Connection, req: ExportRequest, day: str, *, plain: bool) -> Iterator[Page]:
    after: tuple[str, int] | None = None
    while True:
        bound = "" if after is None else " AND (ts, id) > (?, ?)"
        row = conn.execute(
            f"SELECT ts, id FROM {req.type.key} WHERE site_id = ? AND day = ?{bound} "
            "ORDER BY ts, id LIMIT 1 OFFSET ?",
            [req.site_id, day, *(after or ()), CHUNK_ROWS - 1],
        ).fetchone()
        upto = None if row is None else (row[0], row[1])
        yield Page(day, day, after, upto, plain)
        if upto is None:
            return
        after = upto


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around the export's queries (unless the caller holds one): every
    page sees the same rows."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.commit()  # nothing was written; a no-op if SQLite already ended the transaction


def _csv_line(
    conn: sqlite3.Connection,
    req: ExportRequest,
    head: bytes,
    tail: bytes,
    row_id: int,
    commas: int,
) -> bytes:
    """A row whose fields before the last may need quoting or a formula guard: the csv module
    writes those from the values."""
    if (
        head.count(b",") == commas
        and not any(ch in head for ch in (b'"', b"\r", b"\n"))
        and not (req.formula_guard and _formula_in(head))
    ):
        return head + tail + b"\r\n"
    row = conn.execute(event_row_query(req), [row_id]).fetchone()
    return csv_line(req.type.columns, row, formula_guard=req.formula_guard).encode()


def assemble(req: ExportRequest, parts: Iterator[tuple[bytes, int]]) -> Pieces:
    """Header, rows, closing: CSV has a header row; JSON is `[` rows `]`."""
    if req.format == "csv":
        yield (",".join(req.type.header) + "\r\n").encode(), 0
        yield from parts
        return
    empty = True
    for data, n in parts:
        if empty:
            data, empty = b"[\n" + data[2:], False
        yield data, n
    yield (b"[]\n" if empty else b"\n]\n"), 0


def pieces(conn: sqlite3.Connection, req: ExportRequest) -> Pieces:
    """The export file as (bytes, rows in them), a batch of rows at a time."""
    return assemble(req, body(conn, req))
