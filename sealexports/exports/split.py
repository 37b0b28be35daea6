"""A raw export cut in two at a day, the later part written by a forked second process at the
same time: on two cores, the whole export takes about the time of its larger part.

The command line only: a server keeps its exports in threads (two threads with a connection each
write a raw export no faster, see raw.py, and a server that forks is fragile). The parts
concatenated are the bytes of the whole export: rows are in (day, ts, id) order and each part
is a range of whole days. Both processes read one snapshot; if a write lands between their
starts, this process writes the whole export alone.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from sealexports.errors import SealExportsError
from sealexports.exports import raw
from sealexports.exports.filters import slow_regex_is_bad_input
from sealexports.exports.request import ExportRequest
from sealexports.storage.database import begin_reading, connect, database_file, same_snapshot

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

MIN_ROWS = 100_000  # below this, a second process costs more than it saves
READ_BYTES = 1 << 20


def halves(conn: sqlite3.Connection, req: ExportRequest) -> tuple[ExportRequest, ExportRequest] | None:
    """The export as two ranges of days of about as many events (the day catalog's counts: the
    day after which the first range has nearest half), or None when a second process is not
    worth it (an aggregate, one day, few rows). Each process finds its own pages."""
    if req.type.kind != "events" or req.days < 2:
        return None
    counts = raw.day_counts(conn, req)
    total = sum(counts.values())
    if total < MIN_ROWS:
        return None
    done = 0
    middle, gap = req.date_from, total
    for day, n in counts.items():
        done += n
        if abs(2 * done - total) < gap:
            middle, gap = date.fromisoformat(day), abs(2 * done - total)
    middle = min(middle, req.date_to - timedelta(days=1))
    return replace(req, date_to=middle), replace(req, date_from=middle + timedelta(days=1))


def pieces(conn: sqlite3.Connection, req: ExportRequest, folder: Path) -> raw.Pieces | None:
    """The export's (bytes, rows), its later half written meanwhile by a forked process into a
    temporary file in `folder`; None when `halves` says no, or the database is not a file."""
    parts = halves(conn, req)
    path = database_file(conn)
    if parts is None or not path or conn.in_transaction:
        return None
    return _split(conn, req, parts, path, folder)


def _split(
    conn: sqlite3.Connection,
    req: ExportRequest,
    parts: tuple[ExportRequest, ExportRequest],
    path: str,
    folder: Path,
) -> raw.Pieces:
    first, later = parts
    fd, name = tempfile.mkstemp(dir=folder, prefix=".sealexports-part.", suffix=".tmp")
    os.close(fd)
    import multiprocessing  # 19 ms of imports, paid only by an export that splits

    ctx = multiprocessing.get_context("fork")  # no re-import; the child never uses `conn`
    pipe, theirs = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_write_later, args=(theirs, path, later, name), daemon=True)

    def start() -> None:
        process.start()
        theirs.close()  # so that its end, if it dies, is an EOF here
        _receive(pipe)  # "began"

    try:
        if same_snapshot(conn, start):
            yield from raw.assemble(req, chain(raw.body(conn, first), _later(pipe, name)))
        else:  # a write landed between the two starts
            process.kill()
            yield from raw.pieces(conn, req)
    finally:
        if process.is_alive():
            process.kill()
        if process.pid is not None:
            process.join()
        pipe.close()
        theirs.close()
        Path(name).unlink(missing_ok=True)
        conn.commit()  # end the read transaction `same_snapshot` began


def write_part(conn: sqlite3.Connection, req: ExportRequest, dest: Path) -> int:
    """The rows of `req` without header or closing (what follows the first part), into `dest`;
    how many rows."""
    rows = 0
    with open(dest, "wb") as f:
        for data, n in raw.body(conn, req):
            f.write(data)
            rows += n
    return rows


def _write_later(pipe: Connection, path: str, req: ExportRequest, dest: str) -> None:
    """The forked process: begin reading, say so, write the part, send its rows (or the error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the first process, which ends this one
    try:
        with slow_regex_is_bad_input():
            conn = connect(path, migrate=False)
            begin_reading(conn)
            pipe.send("began")
            pipe.send(write_part(conn, req, Path(dest)))
    except SealExportsError as e:
        pipe.send(e)
    except BaseException:
        last = traceback.format_exc().strip().splitlines()[-1]
        pipe.send(SealExportsError(f"the second export process failed: {last}"))


def _receive(pipe: Connection) -> object:
    """What the second process sent next; its error raised here."""
    try:
        message = pipe.recv()
    except EOFError:
        raise SealExportsError("the second export process ended unexpectedly") from None
    if isinstance(message, SealExportsError):
        raise message
    return message


def _later(pipe: Connection, name: str) -> Iterator[tuple[bytes, int]]:
    """The second process's part, once it is done; its row count rides on the last piece."""
    rows = _receive(pipe)
    assert isinstance(rows, int)
    with open(name, "rb") as f:
        data = f.read(READ_BYTES)
        while data:
            following = f.read(READ_BYTES)
            yield data, 0 if following else rows
            data = following
