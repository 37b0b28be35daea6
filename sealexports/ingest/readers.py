"""Reading events: NDJSON lines, CSV rows, or a JSON array, into `Item`s one at a time.

A reader never holds more than one record: a file of any size streams through it. Per-record
problems (a line that is not JSON, a row with too many cells) become items with an error;
problems with the input as a whole (a CSV header naming no known field) raise EventError.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sealexports.ingest.event_format import FIELDS, EventError


@dataclass(slots=True)
class Item:
    """One record: its line number (file) or index (batch), and its fields or what is wrong."""

    line: int
    data: dict[str, Any] | None
    error: str | None = None


class Meter:
    """Counts the bytes a reader has consumed, for progress bars."""

    def __init__(self) -> None:
        self.bytes = 0

    def lines(self, raw: Iterable[bytes]) -> Iterator[bytes]:
        for line in raw:
            self.bytes += len(line)
            yield line


def ndjson_items(lines: Iterable[bytes], *, first: int = 1) -> Iterator[Item]:
    """One event per line; blank lines are skipped (but counted)."""
    for number, raw in enumerate(lines, first):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            yield Item(number, None, f"not valid JSON ({e})")
            continue
        if not isinstance(data, dict):
            yield Item(number, None, "an event must be a JSON object")
            continue
        yield Item(number, data)


@dataclass(slots=True)
class NdjsonLines:
    """NDJSON lines read as `ndjson_items` reads them; an import on two processes hands every
    other block of them to its second process unparsed."""

    lines: Iterable[bytes]

    def __iter__(self) -> Iterator[Item]:
        return ndjson_items(self.lines)


# What a JSON array's items are split on: a whole string (skipped), an opening quote whose
# string has not fully arrived yet, or a bracket or comma. Values themselves are left to orjson.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|["\[\]{},]', re.DOTALL)
_NOT_ARRAY = "the body must be a JSON array of events (or NDJSON, one event per line)"


def json_array_items(chunks: Iterable[bytes]) -> Iterator[Item]:
    """A JSON array of events, numbered from 0, read a chunk at a time: each item is parsed as
    soon as it is whole, so a body of millions of items is never held. EventError (at once,
    or when reached) if the body is no JSON array or not valid JSON."""
    buf = b""
    pos = 0  # where scanning goes on in buf
    start = -1  # where the current item starts in buf; -1 before the opening bracket
    depth = 0
    index = 0
    pending = iter(chunks)
    done = False
    while True:
        if not done:
            chunk = next(pending, None)
            if chunk is None:
                done = True
            else:
                keep = start if start >= 0 else 0
                buf, pos, start = buf[keep:] + chunk, pos - keep, start - keep if start >= 0 else -1
        if start < 0:
            head = buf.lstrip()
            if not head:
                if done:
                    raise EventError(None, "the body is not valid JSON (it is empty)")
                continue
            if head[:1] != b"[":
                raise EventError(None, _NOT_ARRAY)
            start = pos = len(buf) - len(head) + 1
            depth = 1
        for m in _TOKEN.finditer(buf, pos):
            token = m.group()
            if token == b'"':  # a string still arriving
                if done:
                    raise EventError(None, "the body is not valid JSON (a string is not closed)")
                pos = m.start()
                break
            if token[0] == 0x22:
                continue
            if token in b"[{":
                depth += 1
                continue
            if token in b"]}":
                depth -= 1
                if depth > 0:
                    continue
            elif depth > 1:  # a comma inside an item
                continue
            raw = buf[start : m.start()]
            if raw.strip():
                yield _array_item(index, raw)
                index += 1
            elif token == b"," or index:  # [,1] [1,,2] [1,]
                raise EventError(None, "the body is not valid JSON (an empty item)")
            start = m.end()
            if depth == 0:
                if buf[start:].strip() or any(c.strip() for c in pending):
                    raise EventError(None, "the body is not valid JSON (data after the array)")
                return
        else:
            pos = len(buf)
            if done:
                raise EventError(None, "the body is not valid JSON (the array is not closed)")


def _array_item(index: int, raw: bytes) -> Item:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise EventError(None, f"the body is not valid JSON (item {index}: {e})") from None
    return (
        Item(index, event) if isinstance(event, dict) else Item(index, None, "an event must be a JSON object")
    )


def csv_items(lines: Iterable[bytes]) -> Iterator[Item]:
    """One event per row under a header row of field names; an empty cell is a missing value,
    `properties` is JSON text. Line numbers are those where each record starts."""
    consumed = 0

    def text() -> Iterator[str]:
        nonlocal consumed
        for raw in lines:
            consumed += 1
            try:
                yield raw.decode("utf-8-sig" if consumed == 1 else "utf-8")
            except UnicodeDecodeError:
                raise EventError(None, f"line {consumed}: not valid UTF-8") from None

    reader = csv.reader(text(), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise EventError(None, f"line 1: bad CSV header ({e})") from None
    if header is None:
        return
    header = [h.strip() for h in header]
    for name in header:
        if name not in FIELDS:
            raise EventError(None, f"line 1: unknown column {name!r} (see docs/events.md for the fields)")
        if header.count(name) > 1:
            raise EventError(None, f"line 1: column {name!r} appears twice")
    while True:
        start = consumed + 1
        try:
            row = next(reader, None)
        except csv.Error as e:  # fatal: the reader cannot find the next record reliably after it
            raise EventError(None, f"line {start}: bad CSV ({e})") from None
        if row is None:
            return
        if not row or row == [""]:
            continue
        if len(row) != len(header):
            yield Item(start, None, f"{len(row)} cells, but the header has {len(header)}")
            continue
        data: dict[str, Any] = {k: cell for k, cell in zip(header, row, strict=True) if cell != ""}
        if "properties" in data:
            try:
                data["properties"] = orjson.loads(data["properties"])
            except orjson.JSONDecodeError:
                yield Item(start, None, "properties: not valid JSON")
                continue
        yield Item(start, data)
