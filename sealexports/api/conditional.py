"""Conditional and range requests on a finished export file (RFC 9110 sections 13 and 14).

Pure: headers in, a `Plan` out (the status, the byte range to send, the headers to add). The
file's validator is its SHA-256 (a strong ETag: the same bytes always have the same tag), and
`Repr-Digest` (RFC 9530) carries the same digest so that a client can check what it received.

Decisions: one range per request. A `Range` with several ranges is answered 200 with the whole
file (a server may ignore Range; multipart/byteranges buys nothing for resuming a download).
A `Range` that cannot be parsed is ignored too (200); one whose start is past the end is a 416.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from sealexports.errors import PreconditionFailed, RangeNotSatisfiable

CACHE_CONTROL = "private, no-store"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Representation:
    """What the validators are made of: the file's size, SHA-256 (hex) and when it was written."""

    size: int
    sha256: str
    modified: datetime  # aware, UTC

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'

    @property
    def last_modified(self) -> str:
        return format_datetime(self.modified.astimezone(UTC).replace(microsecond=0), usegmt=True)

    def headers(self) -> dict[str, str]:
        """Sent with every answer about the file (200, 206, 304, HEAD)."""
        b64 = base64.b64encode(bytes.fromhex(self.sha256)).decode()
        return {
            "etag": self.etag,
            "last-modified": self.last_modified,
            "repr-digest": f"sha-256=:{b64}:",
            "digest": f"SHA-256={b64}",  # RFC 3230, for clients older than RFC 9530
            "accept-ranges": "bytes",
            "cache-control": CACHE_CONTROL,
        }


@dataclass(frozen=True)
class Plan:
    """200 (the whole file), 206 (bytes start..end inclusive) or 304 (nothing)."""

    status: int
    start: int = 0
    end: int = -1  # inclusive; -1 with size 0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def plan(method: str, headers: Mapping[str, str], rep: Representation) -> Plan:
    """How to answer a GET or HEAD for `rep`, given the request's headers (lower-case names).
    Raises PreconditionFailed (412) or RangeNotSatisfiable (416)."""
    common = rep.headers()
    if_match = headers.get("if-match")
    if if_match is not None and not _matches(if_match, rep.etag, weak=False):
        raise PreconditionFailed("If-Match does not match the file's ETag")
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _matches(if_none_match, rep.etag, weak=True):
            return Plan(304, headers=common)
    elif _not_modified_since(headers.get("if-modified-since"), rep.modified):
        return Plan(304, headers=common)
    whole = Plan(200, 0, rep.size - 1, {**common, "content-length": str(rep.size)})
    wanted = headers.get("range")
    if method != "GET" or wanted is None or not _if_range_holds(headers.get("if-range"), rep):
        return whole
    parsed = parse_range(wanted, rep.size)
    if parsed is None:
        return whole
    start, end = parsed
    ranged = {"content-length": str(end - start + 1), "content-range": f"bytes {start}-{end}/{rep.size}"}
    return Plan(206, start, end, {**common, **ranged})


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The one byte range `value` asks of a `size`-byte file, clipped to it; None to ignore the
    header (several ranges, or not a bytes range). RangeNotSatisfiable if it lies past the end."""
    match = _RANGE.match(value)
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None  # invalid: ignored, as RFC 9110 14.1.1 allows
        if start >= size:
            raise RangeNotSatisfiable(f"range starts at byte {start}; the file has {size} bytes", size=size)
        return start, end
    if not last:
        return None  # "bytes=-"
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(f"an empty suffix range of a {size}-byte file", size=size)
    return max(0, size - suffix), size - 1


def _tags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def _matches(value: str, etag: str, *, weak: bool) -> bool:
    """If-Match uses the strong comparison, If-None-Match the weak one (W/ ignored)."""
    for tag in _tags(value):
        if tag == "*":
            return True
        if weak and tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _not_modified_since(value: str | None, modified: datetime) -> bool:
    since = _http_date(value)
    return since is not None and modified.replace(microsecond=0) <= since


def _if_range_holds(value: str | None, rep: Representation) -> bool:
    """No If-Range, or one that names this very file (its ETag, or exactly its Last-Modified):
    the range is served; otherwise the whole file is (the client's part is of another file)."""
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == rep.etag  # strong comparison: a weak tag never matches
    return value == rep.last_modified
