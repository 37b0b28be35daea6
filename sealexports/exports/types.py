"""The 13 export types: their columns (in order), their kind, and the dimension they group by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["dimension", "pages", "time_series", "events"]
ColumnKind = Literal["text", "int", "dec2", "json", "date", "timestamp"]  # date: YYYY-MM-DD; timestamp: UTC


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind = "text"


METRICS = (
    Column("entrances", "int"),
    Column("engaged_entrances", "int"),
    Column("bounce_rate", "dec2"),
    Column("page_views", "int"),
    Column("microconversions", "int"),
    Column("conversions", "int"),
    Column("conversion_rate", "dec2"),
    Column("revenue", "dec2"),
)

_EVENT_TAIL = (
    Column("path"),
    Column("landing_page"),
    Column("utm_source"),
    Column("utm_medium"),
    Column("utm_campaign"),
    Column("utm_term"),
    Column("utm_content"),
    Column("country"),
    Column("device_type"),
    Column("browser"),
    Column("os"),
    Column("content_grouping"),
    Column("properties", "json"),
)


@dataclass(frozen=True)
class ExportType:
    name: str
    kind: Kind
    columns: tuple[Column, ...]
    key: str  # the column rows group by (events: the table read)
    csv_row_bytes: int  # average size of a row, for estimates (measured on demo data)
    json_row_bytes: int

    @property
    def header(self) -> list[str]:
        return [c.name for c in self.columns]


def _dimension(name: str, key: str, *extra: Column) -> ExportType:
    return ExportType(name, "dimension", (Column(key), *extra, *METRICS), key, 60, 230)


EXPORT_TYPES: dict[str, ExportType] = {
    t.name: t
    for t in (
        ExportType(
            "pages",
            "pages",
            (
                Column("path"),
                Column("views", "int"),
                Column("entrances", "int"),
                Column("conversions", "int"),
                Column("content_grouping"),  # ours, after the spec's four
            ),
            "path",
            60,
            125,
        ),
        _dimension("sources", "utm_source"),
        _dimension("mediums", "utm_medium"),
        _dimension("campaigns", "utm_campaign"),
        _dimension("terms", "utm_term"),
        _dimension("countries", "country", Column("country_name")),
        _dimension("devices", "device_type"),
        _dimension("browsers", "browser"),
        _dimension("os", "os"),
        ExportType(
            "conversions",
            "events",
            (
                Column("date", "date"),
                Column("timestamp", "timestamp"),
                Column("conversion_type"),
                Column("amount", "dec2"),
                *_EVENT_TAIL,
            ),
            "conversions",
            260,
            560,
        ),
        ExportType(
            "microconversions",
            "events",
            (
                Column("date", "date"),
                Column("timestamp", "timestamp"),
                Column("conversion_type"),
                *_EVENT_TAIL,
            ),
            "microconversions",
            210,
            500,
        ),
        ExportType("time_series", "time_series", (Column("date", "date"), *METRICS), "day", 50, 200),
        ExportType(
            "landing_pages",
            "dimension",
            (Column("landing_page"), Column("content_grouping"), *METRICS),
            "landing_page",
            90,
            280,
        ),
    )
}
