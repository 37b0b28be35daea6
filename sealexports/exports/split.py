"""A raw export split by day in two parts, the later one written by a second process at the same
time: on two cores, the whole export takes about the time of its larger part.

The command line only: a server keeps its exports in threads (two threads with a connection each
write a raw export no faster, see raw.py, and a server that spawns processes is fragile). The
parts concatenated are the bytes of the whole export: rows are in (day, ts, id) order and each
part is a range of whole days.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from itertools import chain
from pathlib import Path

from sealexports.errors import SealExportsError
from sealexports.exports import raw
from sealexports.exports.request import ExportRequest, build_request

MIN_ROWS = 100_000  # below this, starting a second process costs more than it saves
# The events the first process writes while the second one starts (about 0.15 s of start-up at
# about 450,000 CSV rows/s): the first part is longer by as much, so both end together.
HEAD_START_ROWS = 70_000
READ_BYTES = 1 << 20


def halves(conn: sqlite3.Connection, req: ExportRequest) -> tuple[ExportRequest, ExportRequest] | None:
    """The export as two ranges of days, the first with HEAD_START_ROWS events more than the
    second (the day catalog's counts), or None when it is not worth a second process (an
    aggregate, one day, few rows)."""
    if req.type.kind != "events" or req.days < 2:
        return None
    counts = raw.day_counts(conn, req)
    total = sum(counts.values())
    if total < MIN_ROWS:
        return None
    done = 0
    middle = req.date_from
    for day, n in counts.items():
        done += n
        middle = date.fromisoformat(day)
        if done * 2 >= total + HEAD_START_ROWS:
            break
    middle = min(max(middle, req.date_from), req.date_to - timedelta(days=1))
    return (
        dataclasses.replace(req, date_to=middle),
        dataclasses.replace(req, date_from=middle + timedelta(days=1)),
    )


def write_part(conn: sqlite3.Connection, req: ExportRequest, dest: Path) -> int:
    """The rows of `req` without header or closing (what `pieces` puts after the first part),
    into `dest`; how many rows."""
    rows = 0
    with open(dest, "wb") as f:
        for data, n in raw.body(conn, req):
            f.write(data)
            rows += n
    return rows


def part_spec(req: ExportRequest) -> str:
    return json.dumps(
        {
            "site": req.site_id,
            "type": req.type.name,
            "format": req.format,
            "from": req.date_from.isoformat(),
            "to": req.date_to.isoformat(),
            "filters": dict(req.filters),
            "formula_guard": req.formula_guard,
        }
    )


def part_request(spec: str) -> ExportRequest:
    s = json.loads(spec)
    return build_request(
        s["site"], s["type"], s["format"], s["from"], s["to"], s["filters"], formula_guard=s["formula_guard"]
    )


def pieces(
    conn: sqlite3.Connection, req: ExportRequest, command: Sequence[str], folder: Path
) -> raw.Pieces | None:
    """The export's (bytes, rows), its later half written meanwhile by `command SPEC FILE` (a
    process that runs `write_part` and prints the rows); None when `halves` says no."""
    parts = halves(conn, req)
    if parts is None:
        return None
    return _split(conn, req, parts, command, folder)


def _split(
    conn: sqlite3.Connection,
    req: ExportRequest,
    parts: tuple[ExportRequest, ExportRequest],
    command: Sequence[str],
    folder: Path,
) -> raw.Pieces:
    first, second = parts
    fd, name = tempfile.mkstemp(dir=folder, prefix=".sealexports-part.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    proc = subprocess.Popen(
        [*command, part_spec(second), name],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield from raw.assemble(req, chain(raw.body(conn, first), _later(proc, tmp)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        tmp.unlink(missing_ok=True)


def _later(proc: subprocess.Popen[bytes], tmp: Path) -> Iterator[tuple[bytes, int]]:
    """The second process's part, once it is done; its row count rides on the last piece."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise SealExportsError(f"the second export process failed: {lines[-1] if lines else proc.returncode}")
    rows = int(out)
    with open(tmp, "rb") as f:
        data = f.read(READ_BYTES)
        while data:
            following = f.read(READ_BYTES)
            yield data, 0 if following else rows
            data = following
