"""Run an export: its rows, its bytes, its file (atomically), and its estimate.

The CLI, the HTTP handlers and the background tasks all call these, so the same request
always gives the same bytes whichever way it is asked for.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sealexports.countries import country_name
from sealexports.errors import Cancelled, QueryTimeout
from sealexports.exports import compression, formats, parquet, raw, split, spreadsheet, sums
from sealexports.exports.filters import slow_regex_is_bad_input
from sealexports.exports.queries import estimate_query, export_query
from sealexports.exports.request import ExportRequest
from sealexports.exports.writers import CHUNK_ROWS, chunks_for, ndjson_from_json
from sealexports.storage.database import make_private_dir
from sealexports.storage.deadline import Deadline

ROWS_PER_SECOND = 150_000  # a conservative figure for estimated_duration_seconds
WRITEBACK_BYTES = 16 << 20  # see _copy


@dataclass(frozen=True)
class Estimate:
    estimated_rows: int
    estimated_size_bytes: int
    estimated_size_human: str
    recommended_format: str
    will_use_background_job: bool
    estimated_duration_seconds: int
    exact: bool = True  # False: estimated_rows is an upper bound (see is_upper_bound)


@dataclass(frozen=True)
class FileInfo:
    path: Path
    rows: int
    size_bytes: int
    sha256: str | None  # None: not asked for (write_file's `digest`)


def rows(conn: sqlite3.Connection, req: ExportRequest) -> Iterator[Sequence[Any]]:
    """The export's rows, in order, as the writers take them."""
    sql, params = export_query(req, sums.summed(conn, req))
    cursor = conn.execute(sql, params)
    kind = req.type.kind
    if kind in ("events", "pages"):
        while batch := cursor.fetchmany(CHUNK_ROWS):
            yield from batch
        return
    if kind == "dimension":
        key_columns = 2 if req.type.name == "landing_pages" else 1
        for row in cursor:
            yield _finish_metrics(req, row, key_columns)
        return
    # time_series: every day of the range, zero-filled.
    by_day = iter(cursor)
    pending = next(by_day, None)
    for i in range(req.days):
        day = (req.date_from + timedelta(days=i)).isoformat()
        if pending is not None and pending[0] == day:
            yield _finish_metrics(req, pending, 1)
            pending = next(by_day, None)
        else:
            yield (day, 0, 0, 0.0, 0, 0, 0, 0.0, 0.0)


def _finish_metrics(req: ExportRequest, row: Sequence[Any], key_columns: int) -> Sequence[Any]:
    """(key, [extra,] e, g, pv, mc, c, rev_cents) -> the M columns with their derived rates."""
    if req.type.name == "countries":
        key: tuple[Any, ...] = (row[0], country_name(row[0]))
        e, g, pv, mc, c, rev = row[1:]
    else:
        key = tuple(row[:key_columns])
        e, g, pv, mc, c, rev = row[key_columns:]
    bounce = _percent(e - g, e)
    rate = _percent(min(c, e), e)  # capped at 100
    return (*key, e, g, bounce, pv, mc, c, rate, (rev or 0) / 100)


def _percent(part: int, whole: int) -> float:
    """part / whole * 100 rounded half up to 2 decimals, exactly (0 when whole is 0).

    Integer arithmetic: `round(float, 2)` rounds ties to even (26/64 -> 40.62, not 40.63) and
    misrounds near-ties through the float's binary error.
    """
    if not whole:
        return 0.0
    return (part * 20000 + whole) // (2 * whole) / 100


def chunks(conn: sqlite3.Connection, req: ExportRequest) -> Generator[bytes, None, None]:
    """The export file's bytes, a chunk at a time."""
    pieces = _pieces(conn, req)
    try:
        with slow_regex_is_bad_input():
            for data, _ in pieces:
                yield data
    finally:
        pieces.close()


def _pieces(conn: sqlite3.Connection, req: ExportRequest) -> raw.Pieces:
    """(bytes, rows in them): the file's bytes, in its format, compressed as asked."""
    return compression.compressed(req.compression, _plain(conn, req))


def _plain(conn: sqlite3.Connection, req: ExportRequest) -> raw.Pieces:
    if req.format == "xlsx":
        yield from spreadsheet.pieces(req.type.columns, rows(conn, req))
        return
    if req.format == "parquet":
        yield from parquet.pieces(req.type.columns, rows(conn, req))
        return
    if req.type.kind == "events":  # formatted inside SQLite (raw.py); NDJSON from its JSON objects
        if req.format == "ndjson":
            yield from ndjson_from_json(raw.pieces(conn, replace(req, format="json")))
        else:
            yield from raw.pieces(conn, req)
        return
    counter = _Counter(rows(conn, req))
    done = 0
    for chunk in chunks_for(req.format, req.type.columns, counter, formula_guard=req.formula_guard):
        yield chunk, counter.n - done
        done = counter.n


def write_file(
    conn: sqlite3.Connection,
    req: ExportRequest,
    dest: Path,
    *,
    progress: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
    mode: int = 0o600,
    second_core: bool = False,
    digest: bool = True,
) -> FileInfo:
    """Write the export to `dest` atomically: a temporary file, fsync, then rename. The file
    has `mode` (owner-only by default: exports hold a tenant's data), whatever the umask.

    `progress` gets the rows written so far after each chunk; `cancelled` is asked before each
    chunk and raises Cancelled. On any error the temporary file is removed. `second_core` (the
    command line only): a forked process writes the later half of a big raw export meanwhile,
    next to `dest` (see split.py). `digest`: compute the file's SHA-256 on the way
    (a tenth of a raw CSV export's time; the command line asks for it with a manifest only).

    What is not a regular file (a FIFO, a device such as /dev/null, /dev/stdout) is written in
    place: renaming over it would replace the node itself with a regular file.
    """
    if writes_in_place(dest):
        pieces = _pieces(conn, req)
        # A regular file reached through /dev/stdout is appended to, as the shell's `>` left it.
        flags = os.O_WRONLY | (os.O_APPEND if stat.S_ISREG(dest.stat().st_mode) else 0)
        try:
            with slow_regex_is_bad_input(), open(os.open(dest, flags), "wb") as f:
                return _copy(pieces, f, dest, progress, cancelled, digest)
        finally:
            pieces.close()
    make_private_dir(dest.parent)
    # Only csv and json as raw.py writes them can be cut in two and glued back.
    splits = req.format in ("csv", "json") and req.compression == "none"
    halves = split.pieces(conn, req, dest.parent) if second_core and splits else None
    pieces = halves or _pieces(conn, req)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600
        with slow_regex_is_bad_input(), os.fdopen(fd, "wb") as f:
            info = _copy(pieces, f, dest, progress, cancelled, digest, writeback=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        pieces.close()
        tmp.unlink(missing_ok=True)
        raise
    return info


def writes_in_place(dest: Path) -> bool:
    """Whether `dest` is written where it is rather than replaced: it exists and is not a
    regular file, or it is under /dev or /proc (/dev/stdout leads to whatever stdout is)."""
    if dest.is_absolute() and dest.parts[1:2] in (("dev",), ("proc",)):
        return dest.exists()
    try:
        return not stat.S_ISREG(dest.stat().st_mode)
    except FileNotFoundError:
        return False


def _copy(
    pieces: raw.Pieces,
    f: BinaryIO,
    dest: Path,
    progress: Callable[[int], None] | None,
    cancelled: Callable[[], bool] | None,
    digest: bool,
    writeback: bool = False,
) -> FileInfo:
    """`pieces` into `f`. `writeback` (a new file, fsynced at the end): have the kernel start
    writing each WRITEBACK_BYTES out as they come, so that the fsync finds little left to do
    (180 MB: 0.05 s less)."""
    sha256 = hashlib.sha256() if digest else None
    size = rows_done = started = 0
    writeback = writeback and hasattr(os, "posix_fadvise")
    for chunk, n in pieces:
        if cancelled and cancelled():
            raise Cancelled("the export was cancelled")
        f.write(chunk)
        if sha256 is not None:
            sha256.update(chunk)
        size += len(chunk)
        rows_done += n
        if writeback and size - started >= WRITEBACK_BYTES:
            f.flush()  # DONTNEED starts the writeback of dirty pages; it drops only clean ones
            os.posix_fadvise(f.fileno(), started, size - started, os.POSIX_FADV_DONTNEED)
            started = size
        if progress and n:
            progress(rows_done)
    return FileInfo(dest, rows_done, size, None if sha256 is None else sha256.hexdigest())


class _Counter:
    """Counts rows as they pass to the writer."""

    def __init__(self, it: Iterator[Sequence[Any]]) -> None:
        self.it = it
        self.n = 0

    def __iter__(self) -> Iterator[Sequence[Any]]:
        for row in self.it:
            self.n += 1
            yield row


def count_estimate(conn: sqlite3.Connection, req: ExportRequest) -> int:
    if req.type.kind == "time_series":
        return req.days
    sql, params = estimate_query(req)
    with slow_regex_is_bad_input():
        return int(conn.execute(sql, params).fetchone()[0] or 0)


def is_upper_bound(req: ExportRequest) -> bool:
    """A filtered aggregate's estimate counts the key values the day catalog saw, not the rows
    the filters leave: at least the real count, sometimes far over it (pages with
    content_grouping=blog on the demo: 2,706 estimated, 1,475 real). Every other estimate is exact."""
    return bool(req.conditions) and req.type.kind in ("dimension", "pages")


def count_rows(conn: sqlite3.Connection, req: ExportRequest) -> int:
    """The export's real row count. For a filtered aggregate this runs its query (the export's
    own first, and longest, step); for the others the estimate is already exact."""
    if not is_upper_bound(req):
        return count_estimate(conn, req)
    with slow_regex_is_bad_input():
        sql, params = export_query(req, sums.summed(conn, req))
        return int(conn.execute(f"SELECT COUNT(*) FROM ({sql})", params).fetchone()[0])


def settle(
    conn: sqlite3.Connection, req: ExportRequest, est: Estimate, sync_row_limit: int, max_rows: int = 0
) -> Estimate:
    """`est`, with the real row count when an upper bound would decide something: reach the sync
    row limit (a background job, or a 413 from the stream) or pass `max_rows` (a 413). So an
    export under a limit is never refused, or sent to the background, by a guess. The format's
    own limit (an xlsx sheet's rows) counts as one."""
    n = est.estimated_rows
    held = formats.FORMATS[req.format].max_rows
    if est.exact or not (n >= sync_row_limit or (max_rows and n > max_rows) or (held and n > held)):
        return est
    return _estimate(req, count_rows(conn, req), sync_row_limit, exact=True)


def estimate(conn: sqlite3.Connection, req: ExportRequest, sync_row_limit: int) -> Estimate:
    """A quick count (see `is_upper_bound`); `settle` makes it exact where it matters."""
    return _estimate(req, count_estimate(conn, req), sync_row_limit, exact=not is_upper_bound(req))


def estimate_within(
    conn: sqlite3.Connection,
    req: ExportRequest,
    deadline: Deadline,
    sync_row_limit: int,
    max_rows: int = 0,
    *,
    bound_on_timeout: bool = False,
) -> Estimate:
    """`estimate` then `settle`, their queries under `deadline`. If counting the real rows runs
    past it: QueryTimeout, or with `bound_on_timeout` the upper bound stands (`exact` False: a
    create then goes to the background, where the export has no deadline)."""
    with deadline.running(conn):
        est = estimate(conn, req, sync_row_limit)
    try:
        with deadline.running(conn):
            return settle(conn, req, est, sync_row_limit, max_rows)
    except QueryTimeout:
        if not bound_on_timeout:
            raise
        return est


def _estimate(req: ExportRequest, n: int, sync_row_limit: int, *, exact: bool) -> Estimate:
    json_like = req.format in ("json", "ndjson")
    per_row = (req.type.json_row_bytes if json_like else req.type.csv_row_bytes) * formats.size_factor(
        req.format, req.compression
    )
    size = (
        math.ceil(n * per_row)
        + len(",".join(req.type.header))
        + 2
        + formats.FORMATS[req.format].overhead_bytes
    )
    return Estimate(
        estimated_rows=n,
        estimated_size_bytes=size,
        estimated_size_human=human_size(size),
        recommended_format=formats.recommended(req.format, n),
        will_use_background_job=n >= sync_row_limit,
        estimated_duration_seconds=max(1, math.ceil(n / ROWS_PER_SECOND)),
        exact=exact,
    )


def human_size(n: int) -> str:
    """850 B, 44.2 KB, 8.1 MB (powers of 1024, one decimal)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "TB":  # never "1024.0 KB"
            break
    return f"{value:.1f} {unit}"
