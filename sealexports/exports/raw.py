"""Raw event exports (conversions, microconversions), formatted inside SQLite.

SQLite builds each CSV line or JSON object, so Python moves one string per row instead of a
dozen objects. CSV lines come unquoted; each chunk is checked in one pass for the characters
that need quoting, and only the rows that have them are written by the csv module. Large
exports are split by day into two parts, written by two threads at once (SQLite releases the
GIL while it steps) and joined in order.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Generator, Iterator
from datetime import date
from pathlib import Path

from sealexports.exports.queries import event_days_query, event_line_query, event_row_query
from sealexports.exports.request import ExportRequest
from sealexports.exports.writers import csv_line
from sealexports.storage.database import connect

FETCH_ROWS = 2000
PARALLEL_MIN_ROWS = 50_000
Pieces = Generator[tuple[bytes, int], None, None]  # (bytes, rows in them)


def _body(conn: sqlite3.Connection, req: ExportRequest) -> Iterator[tuple[str, int]]:
    """The rows as text: CSV lines ending in CRLF, or JSON objects each after ',\n'."""
    cursor = conn.execute(*event_line_query(req))
    commas = len(req.type.columns) - 1
    while batch := cursor.fetchmany(FETCH_ROWS):
        n = len(batch)
        if req.format == "json":
            yield ",\n" + ",\n".join([r[0] for r in batch]), n
            continue
        heads = "\n".join([r[0] for r in batch])
        if heads.count(",") == commas * n and not (
            '"' in heads or "\r" in heads or heads.count("\n") != n - 1
        ):
            yield "".join([f"{head}{tail}\r\n" for head, tail, _ in batch]), n
        else:
            yield "".join(_csv_line(conn, req, h, t, row_id, commas) for h, t, row_id in batch), n


def _csv_line(
    conn: sqlite3.Connection, req: ExportRequest, head: str, tail: str, row_id: int, commas: int
) -> str:
    """A row whose fields before the last may need quoting: the csv module writes it."""
    if head.count(",") == commas and not any(ch in head for ch in '"\r\n'):
        return f"{head}{tail}\r\n"
    return csv_line(req.type.columns, conn.execute(event_row_query(req), [row_id]).fetchone())


def _assemble(req: ExportRequest, parts: Iterator[tuple[str, int]], *, close: bool = True) -> Pieces:
    """Header, rows, closing: CSV has a header row; JSON is `[` rows `]`."""
    if req.format == "csv":
        yield (",".join(req.type.header) + "\r\n").encode(), 0
        for text, n in parts:
            yield text.encode(), n
        return
    empty = True
    for text, n in parts:
        if empty:
            text, empty = "[\n" + text[2:], False
        yield text.encode(), n
    if close:
        yield (b"[]\n" if empty else b"\n]\n"), 0


def chunks(conn: sqlite3.Connection, req: ExportRequest) -> Pieces:
    return _assemble(req, _body(conn, req))


def file_pieces(conn: sqlite3.Connection, req: ExportRequest, workdir: Path) -> Pieces:
    """The same bytes as `chunks`; big exports have their second half made by another thread
    into a temporary file in `workdir`, streamed in after the first half."""
    split = _split_day(conn, req)
    if split is None:
        yield from chunks(conn, req)
        return
    first = dataclasses.replace(req, date_to=split)
    second = dataclasses.replace(req, date_from=date.fromordinal(split.toordinal() + 1))
    part = _Part(conn, second, workdir)
    try:
        yield from _assemble(req, _body(conn, first), close=False)
        yield from part.drain()
        if req.format == "json":
            yield b"\n]\n", 0  # both halves have rows
    finally:
        part.close()


def _split_day(conn: sqlite3.Connection, req: ExportRequest) -> date | None:
    """The day that ends the first half, if the export is big enough to split and both halves
    have rows; else None."""
    days = conn.execute(*event_days_query(req)).fetchall()
    total = sum(n for _, n in days)
    if total < PARALLEL_MIN_ROWS or len(days) < 2:
        return None
    done = 0
    for day, n in days[:-1]:
        done += n
        if done * 2 >= total:
            return date.fromisoformat(day)
    return date.fromisoformat(days[-2][0])


class _Part:
    """The second half of an export, written to a temporary file by a thread of its own."""

    def __init__(self, conn: sqlite3.Connection, req: ExportRequest, workdir: Path) -> None:
        self.path = workdir / f".part-{threading.get_ident()}-{id(self)}.tmp"
        self.db = conn.execute("PRAGMA database_list").fetchone()[2]
        self.req = req
        self.rows = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="export-part", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = connect(self.db, migrate=False)  # a connection of this thread's own
        try:
            with open(self.path, "wb") as f:
                for text, n in _body(conn, self.req):
                    if self.stop.is_set():
                        return
                    f.write(text.encode())
                    self.rows += n
        except BaseException as e:  # re-raised by drain() in the caller's thread
            self.error = e
        finally:
            conn.close()

    def drain(self) -> Pieces:
        """Wait for the part (reporting its rows as they come), then stream its bytes."""
        reported = 0
        while self.thread.is_alive():
            self.thread.join(0.2)
            yield b"", self.rows - reported
            reported = self.rows
        if self.error is not None:
            raise self.error
        yield b"", self.rows - reported
        with open(self.path, "rb") as f:
            while block := f.read(1 << 20):
                yield block, 0

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.path.unlink(missing_ok=True)
