"""Export-engine correctness: every file checked against the independent model in tests/model.py.

The model recomputes each export in plain Python from the `Visit` objects that were inserted; it
never looks at the database or the engine's SQL. The session demo database is read-only here.
Filters: test_export_filters.py; determinism, files and estimates: test_export_files.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sealexports.exports.request import build_request
from tests.conftest import DemoDB
from tests.exported import (
    DIMENSION_TYPES,
    DST_FROM,
    DST_TO,
    FORMATS,
    assert_matches_model,
    export_bytes,
    make_request,
    parse_csv,
    parse_json,
    read_export,
)
from tests.model import (
    EXPORT_TYPES,
    HEADERS,
    Model,
)

# --- Every export type and format on the full range -----------------------------------------------


def test_model_sanity(demo_db: DemoDB, model: Model) -> None:
    """The demo data exercises what the tests rely on: DST, midnight spill-over, missing values."""
    tz_days = {e.day for e in model.events["pageview"]}
    assert min(tz_days) == demo_db.date_from and max(tz_days) >= demo_db.date_to
    assert len(model.events["visit"]) == len(demo_db.visits) == 6000
    # Local days differ from UTC days for some events (so the time zone matters)...
    assert any(
        e.day.isoformat() != e.utc[:10] for e in model.events["pageview"] if e.day == date(2025, 3, 30)
    )
    # ...and some visits cross local midnight, so their events fall on more than one day.
    tz = ZoneInfo(demo_db.site.timezone)
    assert any(len({p.ts.astimezone(tz).date() for p in v.pages}) > 1 for v in demo_db.visits)
    assert any(e.dims["country"] is None for e in model.events["visit"])
    assert any(e.dims["utm_campaign"] is None for e in model.events["conversion"])


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
@pytest.mark.parametrize(
    "export_type", ["conversions", "microconversions", "countries", "pages", "time_series"]
)
def test_typed_formats_full_range_match_model(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model, export_type: str, fmt: str
) -> None:
    assert assert_matches_model(demo_conn, model, make_request(demo_db, export_type, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_full_range_matches_model(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model, export_type: str, fmt: str
) -> None:
    req = make_request(demo_db, export_type, fmt)
    expected = assert_matches_model(demo_conn, model, req)
    assert expected, "the demo range has rows for every type"
    if export_type == "time_series":
        assert len(expected) == demo_db.date_to.toordinal() - demo_db.date_from.toordinal() + 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_pages_columns_are_the_specs_four_then_ours(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, fmt: str
) -> None:
    """The spec's `path, views, entrances, conversions` in its order, content_grouping after; a
    client reading `views`, or reading by position, gets the page's views (filtered or not)."""
    spec = ["path", "views", "entrances", "conversions"]
    for filters in (None, {"content_grouping": "blog"}):
        req = build_request("demo", "pages", fmt, str(demo_db.date_from), str(demo_db.date_to), filters)
        data = export_bytes(demo_conn, req)
        if fmt == "csv":
            header, first = list(csv.reader(io.StringIO(data.decode())))[:2]
            assert header == [*spec, "content_grouping"]
            assert int(first[1]) > 0 and first[4]
        else:
            row = json.loads(data)[0] if fmt == "json" else json.loads(data.split(b"\n")[0])
            assert list(row) == [*spec, "content_grouping"] and row["views"] > 0


def test_rates_round_half_up(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    """Exact ties round up: Austria's 26 bounces out of 64 entrances are 40.625% -> 40.63."""
    rows = json.loads(export_bytes(demo_conn, make_request(demo_db, "countries", "json")))
    at = next(r for r in rows if r["country"] == "AT")
    assert (at["entrances"], at["engaged_entrances"]) == (64, 38)
    assert at["bounce_rate"] == 40.63
    csv_data = export_bytes(demo_conn, make_request(demo_db, "countries", "csv"))
    assert b"AT,Austria,64,38,40.63," in csv_data


def test_csv_bytes_are_rfc4180(demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model) -> None:
    """Raw bytes: header line, quoted JSON properties, empty cell for a missing value, 2 decimals."""
    data = export_bytes(demo_conn, make_request(demo_db, "conversions", "csv"))
    lines = data.split(b"\r\n")
    assert lines[0] == ",".join(HEADERS["conversions"]).encode()
    assert lines[-1] == b""
    first = model.rows("conversions", demo_db.date_from, demo_db.date_to)[0]
    props = first[-1]
    assert props is not None and '"' in props
    quoted = '"' + props.replace('"', '""') + '"'
    assert lines[1].decode().endswith("," + quoted)
    assert re.search(rb",\d+\.\d\d,", lines[1])
    sources = export_bytes(demo_conn, make_request(demo_db, "sources", "csv")).split(b"\r\n")
    missing = [line for line in sources if line.startswith(b",")]
    assert len(missing) == 1  # the visits without a utm_source: an empty first cell
    assert re.fullmatch(rb",\d+,\d+,\d+\.\d\d,\d+,\d+,\d+,\d+\.\d\d,\d+\.\d\d", missing[0])


def test_json_bytes(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    data = export_bytes(demo_conn, make_request(demo_db, "conversions", "json"))
    doc = json.loads(data)
    assert isinstance(doc[0]["properties"], dict) and doc[0]["properties"]["currency"] == "EUR"
    assert all(isinstance(r["amount"], int | float) for r in doc)
    sources = json.loads(export_bytes(demo_conn, make_request(demo_db, "sources", "json")))
    assert [r["utm_source"] for r in sources].count(None) == 1


# --- Sums agree across breakdowns -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("date_from", "date_to", "filters"),
    [
        (None, None, None),
        (DST_FROM, DST_TO, None),
        (None, None, {"device_type": "mobile", "conversion_type": ["purchase", "lead"]}),
        (None, None, {"content_grouping": "products"}),
        (date(2025, 4, 5), date(2025, 4, 6), {"advanced_filters": "path:not_contains:/blog/"}),
    ],
    ids=["full", "dst", "mobile-purchase-lead", "cg-products", "last-day-spill"],
)
def test_sums_agree(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    date_from: date | None,
    date_to: date | None,
    filters: dict[str, Any] | None,
) -> None:
    def rows(export_type: str) -> list[dict[str, Any]]:
        req = make_request(demo_db, export_type, "json", date_from, date_to, filters)
        doc: list[dict[str, Any]] = json.loads(export_bytes(demo_conn, req))
        return doc

    def money(values: Iterator[Any]) -> Decimal:
        return sum((Decimal(repr(v)) for v in values), Decimal(0))

    metrics = ("entrances", "engaged_entrances", "page_views", "microconversions", "conversions")
    ts = rows("time_series")
    totals = {m: sum(r[m] for r in ts) for m in metrics}
    revenue = money(r["revenue"] for r in ts)
    for export_type in DIMENSION_TYPES:
        got = rows(export_type)
        assert {m: sum(r[m] for r in got) for m in metrics} == totals, export_type
        assert money(r["revenue"] for r in got) == revenue, export_type
    pages = rows("pages")
    for m, total in (("entrances", "entrances"), ("views", "page_views"), ("conversions", "conversions")):
        assert sum(r[m] for r in pages) == totals[total], m
    conversions = rows("conversions")
    assert len(conversions) == totals["conversions"]
    assert money(r["amount"] for r in conversions) == revenue
    assert len(rows("microconversions")) == totals["microconversions"]
    # And the totals are the model's.
    d0, d1 = date_from or demo_db.date_from, date_to or demo_db.date_to
    sel = {k: model.selected(k, d0, d1, filters) for k in model.events}
    assert totals["entrances"] == len(sel["visit"])
    assert totals["page_views"] == len(sel["pageview"]) > 0
    assert totals["conversions"] == len(sel["conversion"])
    assert revenue == Decimal(sum(e.amount_cents for e in sel["conversion"])) / 100


# --- Sub-ranges and empty ranges ------------------------------------------------------------------


@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_dst_subrange_matches_model(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model, export_type: str
) -> None:
    req = make_request(demo_db, export_type, "json", DST_FROM, DST_TO)
    expected = assert_matches_model(demo_conn, model, req)
    assert expected != model.rows(export_type, demo_db.date_from, demo_db.date_to)
    if export_type == "time_series":
        assert [r[0] for r in expected] == ["2025-03-29", "2025-03-30", "2025-03-31"]
        assert all(r[1] > 0 for r in expected)


@pytest.mark.parametrize("export_type", ["time_series", "sources", "landing_pages", "pages", "conversions"])
def test_dst_subrange_csv(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model, export_type: str
) -> None:
    assert_matches_model(demo_conn, model, make_request(demo_db, export_type, "csv", DST_FROM, DST_TO))


def test_dst_day_boundaries(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    """Events on 2025-03-30 are those between 23:00Z on the 29th and 22:00Z on the 30th."""
    req = make_request(demo_db, "microconversions", "json", date(2025, 3, 30), date(2025, 3, 30))
    stamps = [r["timestamp"] for r in json.loads(export_bytes(demo_conn, req))]
    assert stamps and all("2025-03-29T23:00:00Z" <= s < "2025-03-30T22:00:00Z" for s in stamps)
    expected = sorted(
        m.ts.astimezone(UTC)
        for v in demo_db.visits
        for m in v.microconversions
        if "2025-03-29T23:00:00" <= m.ts.astimezone(UTC).isoformat()[:19] < "2025-03-30T22:00:00"
    )
    assert len(stamps) == len(expected)


@pytest.mark.parametrize(
    ("date_from", "date_to"),
    [(date(2025, 4, 5), date(2025, 4, 9)), (date(2025, 3, 10), date(2025, 3, 16))],
    ids=["after-end", "before-start"],
)
@pytest.mark.parametrize("export_type", ["time_series", "sources", "pages", "landing_pages", "devices"])
def test_edge_ranges_match_model(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    export_type: str,
    date_from: date,
    date_to: date,
) -> None:
    """Ranges reaching past the data: zero-filled days, events spilling over midnight."""
    for fmt in FORMATS:
        assert_matches_model(demo_conn, model, make_request(demo_db, export_type, fmt, date_from, date_to))


def test_spill_after_last_day(demo_db: DemoDB, model: Model, demo_conn: sqlite3.Connection) -> None:
    """Page views after midnight on the last day count on their own day, with no entrance there."""
    day = demo_db.date_to + timedelta(days=1)
    rows = read_export(demo_conn, make_request(demo_db, "time_series", "json", day, day))
    assert len(rows) == 1
    assert rows[0][1] == 0 and rows[0][4] == len(model.selected("pageview", day, day)) > 0


@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_range_without_data(demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str) -> None:
    d0, d1 = date(2024, 1, 1), date(2024, 1, 7)
    csv_data = export_bytes(demo_conn, make_request(demo_db, export_type, "csv", d0, d1))
    json_data = export_bytes(demo_conn, make_request(demo_db, export_type, "json", d0, d1))
    ndjson_data = export_bytes(demo_conn, make_request(demo_db, export_type, "ndjson", d0, d1))
    header = HEADERS[export_type]
    if export_type != "time_series":
        assert csv_data == (",".join(header) + "\r\n").encode()
        assert json.loads(json_data) == []
        assert ndjson_data == b""
        return
    days = [(d0 + timedelta(days=i)).isoformat() for i in range(7)]
    zeros = (0, 0, Decimal(0), 0, 0, 0, Decimal(0), Decimal(0))
    got_header, rows = parse_csv(csv_data)
    assert got_header == header
    assert rows == [(d, *zeros) for d in days]
    assert all(line.endswith(b",0,0,0.00,0,0,0,0.00,0.00") for line in csv_data.split(b"\r\n")[1:-1])
    assert parse_json(json_data, header) == [(d, *zeros) for d in days]
