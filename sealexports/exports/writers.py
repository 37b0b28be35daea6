"""Streaming writers: rows in, bytes out, a chunk at a time; never the whole export in memory.

CSV is RFC 4180 (UTF-8, header row, CRLF); JSON is one array of objects keyed by the header,
one object per line; NDJSON is the same objects, each on its own line ending in LF, no array.
`dec2` columns are written with two decimals in CSV, as numbers in JSON.

CSV text cells lose any NUL character (spreadsheets and C strings end the cell there) and, with
the formula guard on (the default), a cell starting with = + - @ tab or CR gets a leading `'`, so
that a spreadsheet shows it as text instead of running it (OWASP's advice against CSV
injection). Numbers the export computes (counts, rates, amounts) are never touched; JSON is
written as is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from sealexports.exports.types import Column

CHUNK_ROWS = 2000  # rows fetched, and written, per chunk: every export path uses this one
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a formula


def csv_text(value: str, formula_guard: bool = True) -> str:
    """A text value as its CSV cell holds it: no NUL, and a `'` before a formula's first sign."""
    if "\0" in value:
        value = value.replace("\0", "")
    if formula_guard and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(
    columns: Sequence[Column], rows: Iterable[Sequence[Any]], *, formula_guard: bool = True
) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    decimals = [i for i, c in enumerate(columns) if c.kind == "dec2"]
    texts = [i for i, c in enumerate(columns) if c.kind == "text"]
    starts = FORMULA_STARTS if formula_guard else ()
    for n, row in enumerate(rows, 1):
        if decimals:
            row = list(row)
            for i in decimals:
                if row[i] is not None:
                    row[i] = f"{row[i]:.2f}"
        for i in texts:
            value = row[i]
            if type(value) is str and (value.startswith(starts) or "\0" in value):
                row = list(row)
                row[i] = csv_text(value, formula_guard)
        writer.writerow(row)
        if n % CHUNK_ROWS == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def csv_line(columns: Sequence[Column], row: Sequence[Any], *, formula_guard: bool = True) -> str:
    """One row as the CSV writer above writes it."""
    data = b"".join(csv_chunks(columns, [row], formula_guard=formula_guard))
    return data.decode().split("\r\n", 1)[1]


def _objects(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """Each row as one JSON object keyed by the header (`json` columns embedded as they are)."""
    names = [c.name for c in columns]
    raw_json = [i for i, c in enumerate(columns) if c.kind == "json"]
    for row in rows:
        if raw_json:
            row = list(row)
            for i in raw_json:
                if row[i] is not None:
                    row[i] = orjson.Fragment(row[i])
        yield orjson.dumps(dict(zip(names, row, strict=True)))


def json_chunks(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    out: list[bytes] = []
    first = True
    for obj in _objects(columns, rows):
        out.append((b"[\n" if first else b",\n") + obj)
        first = False
        if len(out) >= CHUNK_ROWS:
            yield b"".join(out)
            out.clear()
    out.append(b"[]\n" if first else b"\n]\n")
    yield b"".join(out)


def ndjson_chunks(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """The objects of `json_chunks`, one a line (an empty export is an empty file)."""
    out: list[bytes] = []
    for obj in _objects(columns, rows):
        out.append(obj)
        if len(out) >= CHUNK_ROWS:
            yield b"\n".join(out) + b"\n"
            out.clear()
    yield b"\n".join(out) + b"\n" if out else b""


def ndjson_from_json(pieces: Iterable[tuple[bytes, int]]) -> Iterator[tuple[bytes, int]]:
    """NDJSON from the pieces of a JSON array as `json_chunks` (or raw.py) writes it: `[`, objects
    each after ",\\n", then `\\n]\\n` (or `[]\\n` for none). JSON text holds no raw newline (one
    in a string is written `\\n`), so every ",\\n" is a separator between two objects."""
    first = True
    for data, n in pieces:
        if first:
            first = False
            if data.startswith(b"[]"):
                yield b"", n
                continue
            data = data[2:]  # "[\\n"
        if data.endswith(b"\n]\n"):
            data = data[:-2]
        yield data.replace(b",\n", b"\n"), n


def chunks_for(
    fmt: str, columns: Sequence[Column], rows: Iterable[Sequence[Any]], *, formula_guard: bool = True
) -> Iterator[bytes]:
    """The export in `fmt` (csv, json, ndjson): the formula guard applies to CSV only."""
    if fmt == "csv":
        return csv_chunks(columns, rows, formula_guard=formula_guard)
    if fmt == "ndjson":
        return ndjson_chunks(columns, rows)
    return json_chunks(columns, rows)
