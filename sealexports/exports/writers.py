"""Streaming writers: rows in, bytes out, a chunk at a time; never the whole export in memory.

CSV is RFC 4180 (UTF-8, header row, CRLF); JSON is one array of objects keyed by the header,
one object per line. `dec2` columns are written with two decimals in CSV, as numbers in JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from sealexports.exports.types import Column

CHUNK_ROWS = 2000


def csv_chunks(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    decimals = [i for i, c in enumerate(columns) if c.kind == "dec2"]
    for n, row in enumerate(rows, 1):
        if decimals:
            row = list(row)
            for i in decimals:
                if row[i] is not None:
                    row[i] = f"{row[i]:.2f}"
        writer.writerow(row)
        if n % CHUNK_ROWS == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def csv_line(columns: Sequence[Column], row: Sequence[Any]) -> str:
    """One row as the CSV writer above writes it."""
    return b"".join(csv_chunks(columns, [row])).decode().split("\r\n", 1)[1]


def json_chunks(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    names = [c.name for c in columns]
    raw_json = [i for i, c in enumerate(columns) if c.kind == "json"]
    out: list[bytes] = []
    first = True
    for row in rows:
        if raw_json:
            row = list(row)
            for i in raw_json:
                if row[i] is not None:
                    row[i] = orjson.Fragment(row[i])
        out.append((b"[\n" if first else b",\n") + orjson.dumps(dict(zip(names, row, strict=True))))
        first = False
        if len(out) >= CHUNK_ROWS:
            yield b"".join(out)
            out.clear()
    out.append(b"[]\n" if first else b"\n]\n")
    yield b"".join(out)


WRITERS = {"csv": csv_chunks, "json": json_chunks}
