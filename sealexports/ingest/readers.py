"""Reading events: NDJSON lines, CSV rows, or a JSON array, into `Item`s one at a time.

A reader never holds more than one record: a file of any size streams through it. Per-record
problems (a line that is not JSON, a row with too many cells) become items with an error;
problems with the input as a whole (a CSV header naming no known field) raise EventError.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sealexports.ingest.event import FIELDS, EventError


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


def json_array_items(body: bytes) -> Iterator[Item]:
    """A JSON array of events, numbered from 0. EventError at once if the body is no array."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise EventError(None, f"the body is not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise EventError(None, "the body must be a JSON array of events (or NDJSON, one event per line)")
    return (
        Item(i, event) if isinstance(event, dict) else Item(i, None, "an event must be a JSON object")
        for i, event in enumerate(data)
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
