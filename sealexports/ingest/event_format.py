"""One event of the events format (docs/events.md): its checks, its normal form and its id.

`parse_event` turns a mapping (a JSON object, or a CSV row's cells) into an `Event` or raises
`EventError` naming the field. Normal form: empty strings are missing values, times are POSIX
seconds, amounts integer cents, `properties` minified JSON text, countries upper case,
referrers a host name. Each event gets a 16-byte id: a digest of its `id` field when it has
one, else of its canonical content (the normal form, with the raw `user_agent`), so that the
same event imported twice is recognised, whatever its spelling.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from sealexports import normal
from sealexports.errors import Problem
from sealexports.ingest.useragent import parse_user_agent

KINDS = ("pageview", "conversion", "microconversion")
DEVICE_TYPES = normal.DEVICE_TYPES
TEXT_FIELDS = (
    "path", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "country", "device_type", "browser", "os", "content_grouping", "conversion_type", "user_agent",
    "visitor",
)  # fmt: skip
FIELDS = frozenset((*TEXT_FIELDS, "id", "type", "ts", "amount", "properties", "visit_id"))
MAX_TEXT = 2048  # characters in any text field
MAX_PROPERTIES = 16_384  # characters of minified JSON
MAX_DEPTH = 32  # levels of objects and arrays in `properties` (the object itself is level 1)
MAX_ID = 256
TS_MIN, TS_MAX = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01 UTC
MAX_CENTS = 10**13
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NORMALISED = ("visitor", "referrer", "country", "device_type")  # in the canonical form as normalised
_TEXT = frozenset(TEXT_FIELDS)
_CANONICAL_TEXT = _TEXT - frozenset(_NORMALISED)  # in the canonical form as given


class EventError(ValueError):
    """Raised for a bad event (or input): `field` (None: the whole) and what is wrong with it."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def at(self, line: int) -> Problem:
        """The problem, found at `line` (a file's line, a batch's index)."""
        return Problem(self.field, self.message, line)


@dataclass(slots=True)
class Event:
    """A valid event in normal form."""

    line: int  # line (file) or index (API batch) it came from
    kind: str
    ts: float  # POSIX seconds
    key: str  # the visit key: 'v:' + visit_id, or 'u:' + visitor
    event_id: bytes
    path: str
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    country: str | None = None
    device_type: str | None = None
    browser: str | None = None
    os: str | None = None
    content_grouping: str | None = None
    conversion_type: str | None = None
    amount_cents: int = 0
    properties: str | None = None
    named: bool = False  # its id is a digest of its own `id` field (else of its content)

    @property
    def rank(self) -> int:
        """Page views sort before other events of the same second: a visit starts with one."""
        return 0 if self.kind == "pageview" else 1


def parse_event(raw: Mapping[str, Any], line: int) -> Event:
    """The event in normal form, or EventError for the first problem found."""
    if not FIELDS.issuperset(raw):
        unknown = [k for k in raw if k not in FIELDS]
        raise EventError(unknown[0], "unknown field (see docs/events.md for the fields)")
    v: dict[str, Any] = {k: x for k, x in raw.items() if x is not None and x != ""}
    for name, value in v.items():  # one pass for the usual case; the first bad field in order if any
        if name in _TEXT and (type(value) is not str or len(value) > MAX_TEXT or "\0" in value):
            for field in TEXT_FIELDS:
                if field in v:
                    _text(field, v[field])
            break

    kind = v.get("type")
    if kind is None:
        raise EventError("type", f"missing (one of {', '.join(KINDS)})")
    if kind not in KINDS:
        raise EventError("type", f"{kind!r} is not one of {', '.join(KINDS)}")
    if "ts" not in v:
        raise EventError("ts", "missing (ISO 8601 with an offset or Z, or epoch seconds)")
    ts = _ts(v["ts"])
    key = _visit_key(v)
    path = v.get("path")
    if path is None:
        raise EventError("path", "missing (the page's path, e.g. /pricing)")
    if not path.startswith("/"):
        raise EventError("path", f"must start with '/' (a path, not a URL): {path[:80]!r}")

    conversion_type = v.get("conversion_type")
    amount_cents = 0
    properties = None
    if kind == "pageview":
        for name in ("conversion_type", "amount", "properties"):
            if name in v:
                raise EventError(name, "page views have none (only conversions and microconversions)")
    else:
        if conversion_type is None:
            raise EventError("conversion_type", f"missing (a {kind} needs one, e.g. purchase)")
        if "amount" in v:
            if kind != "conversion":
                raise EventError("amount", "only conversions have an amount")
            amount_cents = _cents(v["amount"])
        if "properties" in v:
            properties = _properties(v["properties"])

    referrer = _normal("referrer", normal.referrer, v) if "referrer" in v else None
    country = _normal("country", normal.country, v) if "country" in v else None
    device_type = _normal("device_type", normal.device_type, v) if "device_type" in v else None
    browser, os_name = v.get("browser"), v.get("os")

    canonical = {k: x for k, x in v.items() if k in _CANONICAL_TEXT}  # keys sorted when dumped
    canonical.update(
        type=kind, ts=ts, key=key, referrer=referrer, country=country, device_type=device_type,
        amount_cents=amount_cents, properties=v.get("properties"),
    )  # fmt: skip
    if "id" in v:
        event_id = _digest(b"id\0" + _id("id", v["id"]).encode())
    else:
        event_id = _digest(b"event\0" + orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS))

    ua = v.get("user_agent")
    if ua is not None and kind == "pageview" and not (device_type and browser and os_name):
        parsed = parse_user_agent(ua)
        device_type = device_type or parsed[0]
        browser = browser or parsed[1]
        os_name = os_name or parsed[2]

    return Event(
        line, kind, ts, key, event_id, path, referrer, v.get("utm_source"), v.get("utm_medium"),
        v.get("utm_campaign"), v.get("utm_term"), v.get("utm_content"), country, device_type, browser,
        os_name, v.get("content_grouping"), conversion_type, amount_cents, properties, "id" in v,
    )  # fmt: skip


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise EventError(name, f"must be a string, got {_kind(value)}")
    if len(value) > MAX_TEXT:
        raise EventError(name, f"longer than {MAX_TEXT} characters")
    if "\0" in value:  # a NUL cuts C strings short: in SQLite's printf, and in spreadsheets
        raise EventError(name, "contains a NUL character (U+0000)")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _id(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventError(name, f"must be a string or an integer, got {_kind(value)}")
    text = str(value)
    if len(text) > MAX_ID:
        raise EventError(name, f"longer than {MAX_ID} characters")
    if "\0" in text:
        raise EventError(name, "contains a NUL character (U+0000)")
    return text


def _visit_key(v: Mapping[str, Any]) -> str:
    if "visit_id" in v:
        if "visitor" in v:
            raise EventError("visit_id", "give visit_id or visitor, not both")
        return "v:" + _id("visit_id", v["visit_id"])
    if "visitor" in v:
        return "u:" + str(v["visitor"])
    raise EventError("visitor", "missing: an event needs a visit_id, or a visitor to stitch visits from")


def _ts(value: Any) -> float:
    if isinstance(value, bool):
        raise EventError("ts", "must be an ISO 8601 time or epoch seconds, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        if value[4:5] != "-" and _NUMBER.match(value):  # 2025-...: a date, never a number
            seconds = float(value)
        else:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise EventError("ts", f"{value[:40]!r} is not an ISO 8601 time or epoch seconds") from None
            if parsed.tzinfo is None:
                raise EventError("ts", f"{value[:40]!r} has no UTC offset: add one, or Z for UTC")
            seconds = parsed.timestamp()
    else:
        raise EventError("ts", f"must be an ISO 8601 time or epoch seconds, got {_kind(value)}")
    if not math.isfinite(seconds) or not TS_MIN <= seconds < TS_MAX:
        hint = " (milliseconds? send seconds)" if math.isfinite(seconds) and seconds >= TS_MAX else ""
        raise EventError("ts", f"{value!r} is outside 2000-2099{hint}")
    return seconds


def _cents(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EventError("amount", f"must be a number, got {_kind(value)}")
    if isinstance(value, str) and not _NUMBER.match(value):
        raise EventError("amount", f"{value[:40]!r} is not a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise EventError("amount", f"{value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise EventError("amount", f"{value!r} must be a number >= 0")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise EventError("amount", f"{value!r} has more than 2 decimals")
    if cents >= MAX_CENTS:
        raise EventError("amount", f"{value!r} is too large")
    return int(cents)


def _properties(value: Any) -> str:
    if not isinstance(value, dict):
        raise EventError("properties", f"must be a JSON object, got {_kind(value)}")
    if _deeper_than(value, MAX_DEPTH):
        raise EventError("properties", f"nested more than {MAX_DEPTH} levels deep")
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_PROPERTIES:
        raise EventError("properties", f"longer than {MAX_PROPERTIES} characters as JSON")
    return text


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest past `limit` levels; a loop, not recursion, so that any
    depth is measured without a RecursionError."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _normal(name: str, normalise: Callable[[str], str | None], v: Mapping[str, Any]) -> str | None:
    """The field's normal form (sealexports.normal), None when missing; EventError if invalid."""
    if name not in v:
        return None
    try:
        return normalise(v[name])
    except ValueError as e:
        raise EventError(name, str(e)) from None
