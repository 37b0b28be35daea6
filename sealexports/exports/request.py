"""An export request, validated: type, format, compression, date range and filters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sealexports.errors import InvalidRequest
from sealexports.exports import formats
from sealexports.exports.filters import Condition, parse_filters
from sealexports.exports.types import EXPORT_TYPES, ExportType

MAX_RANGE_DAYS = 3660
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ExportRequest:
    site_id: str
    type: ExportType
    format: str
    date_from: date
    date_to: date
    filters: Mapping[str, Any] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    formula_guard: bool = True  # CSV: neutralise text cells a spreadsheet would run as a formula
    compression: str = "none"  # csv, json, ndjson: none, gzip or zstd

    @property
    def file_name(self) -> str:
        """sealmetrics_{type}_{YYYYMMDD}_{YYYYMMDD}.{ext}, ext as csv, ndjson, csv.gz"""
        ext = formats.extension(self.format, self.compression)
        return f"sealmetrics_{self.type.name}_{self.date_from:%Y%m%d}_{self.date_to:%Y%m%d}.{ext}"

    @property
    def media_type(self) -> str:
        return formats.media_type(self.format, self.compression)

    @property
    def days(self) -> int:
        return (self.date_to - self.date_from).days + 1


def build_request(
    site_id: str,
    export_type: object,
    fmt: object,
    date_from: object,
    date_to: object,
    filters: object = None,
    *,
    formula_guard: bool = True,
    compression: object = None,
) -> ExportRequest:
    """Validate raw values (from JSON or the command line); InvalidRequest names the bad field."""
    if export_type not in EXPORT_TYPES:
        raise InvalidRequest(
            f"unknown export_type {export_type!r} (expected one of {', '.join(EXPORT_TYPES)})",
            field="export_type",
        )
    fmt, compression = formats.check(fmt, compression)
    start = parse_date(date_from, "date_from")
    end = parse_date(date_to, "date_to")
    if start > end:
        raise InvalidRequest(f"date_from {start} is after date_to {end}", field="date_from")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidRequest(
            f"date range is {(end - start).days + 1} days; at most {MAX_RANGE_DAYS} are allowed",
            field="date_to",
        )
    conditions = parse_filters(filters)
    return ExportRequest(
        site_id=site_id,
        type=EXPORT_TYPES[str(export_type)],
        format=fmt,
        date_from=start,
        date_to=end,
        filters=dict(filters) if isinstance(filters, Mapping) else {},
        conditions=conditions,
        formula_guard=formula_guard,
        compression=compression,
    )


def parse_date(value: object, name: str) -> date:
    """Strictly YYYY-MM-DD, and a real calendar date."""
    if not isinstance(value, str) or not _DATE.match(value):
        raise InvalidRequest(f"{name} must be a date as YYYY-MM-DD, got {value!r}", field=name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{name} {value!r} is not a valid date", field=name) from None
