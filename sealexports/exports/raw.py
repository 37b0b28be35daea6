"""Raw event exports (conversions, microconversions), formatted inside SQLite.

SQLite builds each CSV line or JSON object and hands it over as bytes, so Python moves one
object per row and never decodes or encodes text. CSV lines come unquoted; each chunk is
checked for the characters that need quoting and for a field starting with a formula sign (when
the formula guard is on), and only rows that have one are written by the csv module. printf
ends a value at a NUL: stored text holds none (migration m015; `insert_visits` removes them).

Measured and dropped: splitting an export by day across two threads (no faster: SQLite
connections in one process serialise on shared state, a two-thread aggregate took as long as
one). Two processes are faster: the command line does that (`split.py`), a server does not.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Generator, Iterator

from sealexports.exports.queries import event_line_query, event_row_query
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
    """The rows: CSV lines ending in CRLF, or JSON objects each after ',\\n'.

    Measured: a list comprehension over the batch and one bytes.join beat taking the batch apart
    with zip() and slice assignment (530 against 705 us a 2,000-row chunk): joining twice as
    many pieces costs more than the per-row bytecode it saves."""
    cursor = conn.execute(*event_line_query(req))
    commas = len(req.type.columns) - 1
    while batch := cursor.fetchmany(CHUNK_ROWS):
        n = len(batch)
        if req.format == "json":
            yield b",\n" + b",\n".join([r[0] for r in batch]), n
            continue
        heads = b"\n".join([r[0] for r in batch])
        if (
            heads.count(b",") == commas * n
            and not (b'"' in heads or b"\r" in heads or heads.count(b"\n") != n - 1)
            and not (req.formula_guard and _formula_in(heads))
        ):
            yield b"".join([head + tail + b"\r\n" for head, tail, _ in batch]), n
        else:
            yield b"".join(_csv_line(conn, req, h, t, row_id, commas) for h, t, row_id in batch), n


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
