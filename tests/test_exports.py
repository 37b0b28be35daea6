"""Export-engine correctness: every file checked against the independent model in tests/model.py.

The model recomputes each export in plain Python from the `Visit` objects that were inserted; it
never looks at the database or the engine's SQL. The session demo database is read-only here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sealexports.errors import Cancelled
from sealexports.exports import engine
from sealexports.exports.request import ExportRequest, build_request
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits
from tests.checks import assert_human_size
from tests.conftest import DemoDB, seed_demo
from tests.model import (
    DEC2_COLUMNS,
    EXPORT_TYPES,
    HEADERS,
    INT_COLUMNS,
    JSON_COLUMNS,
    Model,
    Row,
    formula_guarded,
)

FORMATS = ("csv", "json", "ndjson")
AGGREGATE_TYPES = [t for t in EXPORT_TYPES if t not in ("conversions", "microconversions", "time_series")]
DIMENSION_TYPES = [t for t in AGGREGATE_TYPES if t != "pages"]
DST_FROM, DST_TO = date(2025, 3, 29), date(2025, 3, 31)  # Europe/Madrid springs forward on 03-30
_DEC2 = re.compile(r"^-?\d+\.\d\d$")
_INT = re.compile(r"^-?\d+$")
_OOXML_ESCAPE = re.compile("_x([0-9A-F]{4})_")


# --- Helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model(demo_db: DemoDB) -> Model:
    return Model(demo_db.visits, demo_db.site.timezone)


def make_request(
    db: DemoDB,
    export_type: str,
    fmt: str = "json",
    date_from: date | None = None,
    date_to: date | None = None,
    filters: Mapping[str, Any] | None = None,
) -> ExportRequest:
    return build_request(
        db.site.site_id,
        export_type,
        fmt,
        str(date_from or db.date_from),
        str(date_to or db.date_to),
        dict(filters) if filters is not None else None,
    )


def export_bytes(conn: sqlite3.Connection, req: ExportRequest) -> bytes:
    return b"".join(engine.chunks(conn, req))


def _cell(name: str, text: str) -> Any:
    """A CSV cell typed by its column; asserts the contract's formatting on the way."""
    if name in INT_COLUMNS:
        assert _INT.match(text), f"{name}: {text!r} is not an integer"
        return int(text)
    if name in DEC2_COLUMNS:
        assert _DEC2.match(text), f"{name}: {text!r} does not have exactly 2 decimals"
        return Decimal(text)
    return text or None


def _record_ends(text: str) -> int:
    """Record terminators outside quoted fields; asserts each is CRLF (RFC 4180)."""
    quoted, ends = False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted  # an escaped "" toggles twice
        elif not quoted and ch == "\r":
            assert text[i + 1 : i + 2] == "\n", f"bare CR at {i}"
        elif not quoted and ch == "\n":
            assert text[i - 1 : i] == "\r", f"bare LF at {i}"
            ends += 1
    assert not quoted, "unterminated quoted field"
    return ends


def parse_csv(data: bytes) -> tuple[list[str], list[Row]]:
    """Header and typed rows; asserts CRLF record ends (line breaks only inside quoted fields)."""
    assert data.endswith(b"\r\n")
    text = data.decode("utf-8")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert len(records) == _record_ends(text), "one record per CRLF"
    header, body = records[0], records[1:]
    for r in body:
        assert len(r) == len(header)
    return header, [tuple(_cell(n, v) for n, v in zip(header, r, strict=True)) for r in body]


def _json_value(name: str, value: Any) -> Any:
    if name in INT_COLUMNS:
        assert type(value) is int, f"{name}: {value!r} is not an integer"
        return value
    if name in DEC2_COLUMNS:
        assert type(value) in (int, float), f"{name}: {value!r} is not a number"
        number = Decimal(repr(value))
        assert number == number.quantize(Decimal("0.01")), f"{name}: {value!r} has more than 2 decimals"
        return number
    if name in JSON_COLUMNS:
        return value  # embedded JSON: compared with the parsed text
    assert value is None or type(value) is str, f"{name}: {value!r} is not text"
    return value


def parse_json(data: bytes, header: list[str]) -> list[Row]:
    doc = json.loads(data)
    assert isinstance(doc, list)
    return _json_rows(doc, header)


def parse_ndjson(data: bytes, header: list[str]) -> list[Row]:
    """One object a line, each line ending in LF; nothing else (an empty export is empty)."""
    assert data == b"" or data.endswith(b"}\n")
    return _json_rows([json.loads(line) for line in data.split(b"\n")[:-1]], header)


def _json_rows(doc: list[Any], header: list[str]) -> list[Row]:
    out = []
    for obj in doc:
        assert isinstance(obj, dict) and list(obj) == header
        out.append(tuple(_json_value(n, obj[n]) for n in header))
    return out


def as_json_rows(header: list[str], rows: list[Row]) -> list[Row]:
    """The model's rows as they read back from JSON: `properties` parsed."""
    idx = [i for i, n in enumerate(header) if n in JSON_COLUMNS]
    out = []
    for row in rows:
        r = list(row)
        for i in idx:
            r[i] = json.loads(r[i]) if r[i] is not None else None
        out.append(tuple(r))
    return out


def parse_xlsx(data: bytes, header: list[str]) -> list[Row]:
    """Typed rows of the one sheet, read by openpyxl; asserts text is never a formula, numbers are
    numbers and dates dates (shown as the CSV writes them), the header bold and frozen."""
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data))
    [sheet] = book.worksheets
    assert sheet.freeze_panes == "A2"
    cells = list(sheet.iter_rows())
    assert [c.value for c in cells[0]] == header and all(c.font.b for c in cells[0])
    out = []
    for row in cells[1:]:
        values: list[object] = []
        for name, cell in zip(header, row, strict=True):
            value = cell.value
            assert cell.data_type != "f", f"{name}: a formula {value!r}"
            if value is None:
                values.append(None)
            elif name in INT_COLUMNS:
                assert type(value) is int, f"{name}: {value!r} is not an integer"
                values.append(value)
            elif name in DEC2_COLUMNS:
                assert type(value) in (int, float) and cell.number_format == "0.00", (name, value)
                values.append(Decimal(repr(float(value))).quantize(Decimal("0.01")))
            elif name == "date":
                assert isinstance(value, datetime) and cell.number_format == "yyyy-mm-dd", (name, value)
                values.append(value.date().isoformat())
            elif name == "timestamp":
                assert isinstance(value, datetime), (name, value)
                values.append(value.strftime("%Y-%m-%dT%H:%M:%SZ"))
            else:
                assert type(value) is str and cell.data_type == "s", (name, value)
                # OOXML writes a control character as _xHHHH_ (Excel shows the character; openpyxl
                # leaves the escape as it is).
                values.append(_OOXML_ESCAPE.sub(lambda m: chr(int(m[1], 16)), value))
        out.append(tuple(values))
    return out


def parse_parquet(data: bytes, header: list[str]) -> list[Row]:
    """Typed rows read by pyarrow; asserts each column's Parquet type."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == header
    want = {"date": pa.date32(), "timestamp": pa.timestamp("ms", tz="UTC")}
    for name in header:
        kind = pa.int64() if name in INT_COLUMNS else pa.float64() if name in DEC2_COLUMNS else pa.string()
        assert table.schema.field(name).type == want.get(name, kind), name
    out = []
    for record in table.to_pylist():
        values: list[Any] = []
        for name in header:
            value = record[name]
            if value is None:
                values.append(None)
            elif name in DEC2_COLUMNS:
                values.append(Decimal(repr(value)).quantize(Decimal("0.01")))
            elif name == "date":
                values.append(value.isoformat())
            elif name == "timestamp":
                values.append(value.strftime("%Y-%m-%dT%H:%M:%SZ"))
            else:
                values.append(value)
        out.append(tuple(values))
    return out


def read_export(conn: sqlite3.Connection, req: ExportRequest) -> list[Row]:
    """Typed rows of an export (format per the request); asserts its header."""
    data = export_bytes(conn, req)
    header = HEADERS[req.type.name]
    if req.format == "csv":
        got_header, rows = parse_csv(data)
        assert got_header == header
        return rows
    if req.format == "ndjson":
        return parse_ndjson(data, header)
    if req.format == "xlsx":
        return parse_xlsx(data, header)
    if req.format == "parquet":
        return parse_parquet(data, header)
    return parse_json(data, header)


def assert_matches_model(
    conn: sqlite3.Connection,
    model: Model,
    req: ExportRequest,
    filters: Mapping[str, Any] | None = None,
) -> list[Row]:
    expected = model.rows(req.type.name, req.date_from, req.date_to, filters)
    got = read_export(conn, req)
    if req.format in ("json", "ndjson"):
        expected = as_json_rows(HEADERS[req.type.name], expected)
    elif req.formula_guard and req.format == "csv":  # xlsx text is never run, parquet is data: as sent
        expected = [formula_guarded(row) for row in expected]
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"row {i}: got {g}, expected {e}"
    return expected


# --- 1. Every export type and format on the full range -----------------------------------------------


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


# --- 2. Filters --------------------------------------------------------------------------------------

BASIC = ("sources", "pages", "time_series", "conversions")
FILTER_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # Simple keys, string and list forms.
    ("utm_source", {"utm_source": "google"}, BASIC),
    ("utm_source list", {"utm_source": ["facebook", "instagram"]}, BASIC),
    ("utm_medium", {"utm_medium": "cpc"}, BASIC),
    ("utm_medium list", {"utm_medium": ["email", "social"]}, ("campaigns", "time_series")),
    ("utm_campaign", {"utm_campaign": "brand"}, ("mediums", "conversions")),
    ("utm_campaign list", {"utm_campaign": ["spring_sale", "retargeting"]}, ("sources", "pages")),
    ("utm_term", {"utm_term": "running shoes"}, ("campaigns", "time_series")),
    ("utm_term list", {"utm_term": ["gps watch", "sealrun"]}, ("terms", "conversions")),
    ("utm_content", {"utm_content": "banner_a"}, ("sources", "microconversions")),
    ("utm_content list", {"utm_content": ["video_15s", "story"]}, ("mediums", "pages")),
    ("country", {"country": "ES"}, ("countries", "devices", "time_series", "conversions")),
    ("country list", {"country": ["MX", "US"]}, ("countries", "pages", "microconversions")),
    ("device_type", {"device_type": "tablet"}, ("devices", "browsers", "conversions")),
    ("device_type list", {"device_type": ["desktop", "mobile"]}, ("os", "time_series")),
    ("browser", {"browser": "Firefox"}, ("browsers", "landing_pages", "conversions")),
    ("browser list", {"browser": ["Safari", "Samsung Internet"]}, ("os", "pages")),
    ("os", {"os": "Linux"}, ("os", "sources", "microconversions")),
    ("os list", {"os": ["iOS", "iPadOS"]}, ("devices", "time_series")),
    # content_grouping: page views by their page, entrances by the landing page, conversions by
    # the page where they fired.
    ("content_grouping", {"content_grouping": "products"}, (*BASIC, "landing_pages", "microconversions")),
    ("content_grouping list", {"content_grouping": ["blog", "checkout"]}, (*BASIC, "landing_pages")),
    ("content_grouping checkout", {"content_grouping": "checkout"}, ("sources", "time_series", "pages")),
    # conversion_type restricts conversions and microconversions only.
    ("conversion_type", {"conversion_type": "purchase"}, (*BASIC, "microconversions")),
    ("conversion_type list", {"conversion_type": ["lead", "signup"]}, ("devices", "conversions")),
    (
        "conversion_type micro",
        {"conversion_type": ["add_to_cart", "scroll_75"]},
        ("time_series", "microconversions"),
    ),
    ("no match", {"utm_source": "nope"}, ("sources", "time_series", "conversions")),
    (
        "combined",
        {"device_type": "mobile", "country": ["ES", "MX"], "conversion_type": "purchase"},
        ("countries", "time_series", "conversions"),
    ),
    # Advanced filters, every operator on several fields.
    ("adv eq", {"advanced_filters": "utm_source:eq:google"}, ("mediums", "time_series")),
    ("adv eq landing", {"advanced_filters": "landing_page:eq:/"}, ("sources", "pages", "conversions")),
    ("adv ne", {"advanced_filters": "utm_medium:ne:organic"}, ("mediums", "pages")),
    ("adv ne missing", {"advanced_filters": "utm_campaign:ne:brand"}, ("campaigns", "conversions")),
    ("adv ne country", {"advanced_filters": "country:ne:ES"}, ("countries",)),
    ("adv ne referrer", {"advanced_filters": "referrer:ne:google.com"}, ("sources", "time_series")),
    ("adv contains", {"advanced_filters": "utm_term:contains:running"}, ("terms", "conversions")),
    ("adv not_contains", {"advanced_filters": "utm_term:not_contains:running"}, ("terms", "time_series")),
    ("adv regex", {"advanced_filters": "utm_content:regex:^banner"}, ("sources", "microconversions")),
    ("adv not_regex", {"advanced_filters": "utm_content:not_regex:^banner"}, ("sources", "time_series")),
    ("adv regex referrer", {"advanced_filters": r"referrer:regex:\.example$"}, ("sources", "conversions")),
    ("adv in", {"advanced_filters": "country:in:ES|MX|US"}, ("countries", "pages")),
    ("adv not_regex matches all", {"advanced_filters": "country:not_regex:.*"}, ("countries", "time_series")),
    ("adv not_in", {"advanced_filters": "country:not_in:ES|MX"}, ("countries", "conversions")),
    ("adv not_in os", {"advanced_filters": "os:not_in:Windows|Android"}, ("os", "time_series")),
    # path: the page path for page views and conversions, the landing page for entrances.
    (
        "path contains",
        {"advanced_filters": "path:contains:/blog/"},
        ("pages", "landing_pages", "time_series"),
    ),
    ("path eq thank-you", {"advanced_filters": "path:eq:/checkout/thank-you"}, (*BASIC, "landing_pages")),
    (
        "path regex",
        {"advanced_filters": "path:regex:^/products/(running|trail)/"},
        ("pages", "landing_pages", "microconversions"),
    ),
    ("path not_regex", {"advanced_filters": "path:not_regex:^/blog/"}, ("pages", "landing_pages", "sources")),
    ("path in", {"advanced_filters": "path:in:/|/pricing|/about"}, ("pages", "landing_pages")),
    ("landing_page in", {"advanced_filters": "landing_page:in:/|/pricing"}, ("pages", "landing_pages")),
    ("cg in", {"advanced_filters": "content_grouping:in:products|checkout"}, ("pages", "landing_pages")),
    ("cg not_in", {"advanced_filters": "content_grouping:not_in:blog|docs"}, ("sources", "conversions")),
    ("cg regex", {"advanced_filters": "content_grouping:regex:^(home|pricing)$"}, ("time_series",)),
    # conversion_type adds no condition on page views and entrances.
    ("adv conversion_type", {"advanced_filters": "conversion_type:eq:purchase"}, ("time_series", "sources")),
    (
        "adv conversion_type not_in",
        {"advanced_filters": "conversion_type:not_in:purchase|scroll_75"},
        ("time_series", "microconversions"),
    ),
    ("adv conversion_type contains", {"advanced_filters": "conversion_type:contains:a"}, ("pages",)),
    # ANDed expressions; commas inside values.
    ("adv and", {"advanced_filters": "device_type:eq:mobile,browser:ne:Chrome"}, ("browsers", "time_series")),
    ("adv and spaced", {"advanced_filters": "device_type:eq:mobile, browser:eq:Safari"}, ("os",)),
    ("adv comma value", {"advanced_filters": "path:contains:a,b"}, ("pages", "sources")),
    (
        "adv comma value and",
        {"advanced_filters": "path:contains:a,b,utm_source:eq:google"},
        ("pages", "time_series"),
    ),
    (
        "adv regex with comma",
        {"advanced_filters": "path:regex:^/blog/[a-z]{3,5}-"},
        ("pages", "landing_pages"),
    ),
    (
        "adv regex comma and in",
        {"advanced_filters": "utm_term:regex:^(running|trail) shoes$,country:in:ES|MX"},
        ("terms", "conversions"),
    ),
    (
        "simple and advanced",
        {"utm_medium": "cpc", "advanced_filters": "path:contains:/products/"},
        ("campaigns", "pages", "conversions"),
    ),
]
_FILTER_PARAMS = [
    pytest.param(filters, t, id=f"{name}-{t}") for name, filters, types in FILTER_CASES for t in types
]


@pytest.mark.parametrize(("filters", "export_type"), _FILTER_PARAMS)
def test_filters_match_model(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    filters: dict[str, Any],
    export_type: str,
) -> None:
    req = make_request(demo_db, export_type, "json", filters=filters)
    expected = assert_matches_model(demo_conn, model, req, filters)
    # The case means something: it changes this export.
    assert expected != model.rows(export_type, demo_db.date_from, demo_db.date_to)


@pytest.mark.parametrize(
    "filters",
    [
        {"content_grouping": ["blog", "checkout"]},
        {"advanced_filters": "path:regex:^/blog/[a-z]{3,5}-,utm_medium:ne:organic"},
        {"advanced_filters": "utm_campaign:not_regex:sale,country:not_in:ES|MX"},
    ],
    ids=["cg", "regex comma", "negatives"],
)
@pytest.mark.parametrize("export_type", ["landing_pages", "countries", "conversions"])
def test_filters_match_model_csv(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    filters: dict[str, Any],
    export_type: str,
) -> None:
    assert_matches_model(
        demo_conn, model, make_request(demo_db, export_type, "csv", filters=filters), filters
    )


# Path conditions read the rollups (pages, time_series: days; landing pages and days under
# landing_page conditions) or the events, and a regex on a page path runs against the site's
# distinct pages; every aggregate type, with and without a visit-field condition, against the model.
PATH_CONDITIONS = [
    "path:eq:/",
    "path:contains:/blog/",
    "path:not_contains:/products/",
    "path:regex:^/products/(running|trail)/",
    "path:not_regex:^/blog/",
    "path:in:/|/pricing|/about",
    "path:contains:/blog/,path:not_regex:running",
    "landing_page:regex:^/blog/",
    "landing_page:not_in:/|/pricing",
]


@pytest.mark.parametrize("visit_condition", ["", ",country:in:ES|MX"], ids=["path only", "and country"])
@pytest.mark.parametrize("condition", PATH_CONDITIONS)
@pytest.mark.parametrize("export_type", [*AGGREGATE_TYPES, "time_series"])
def test_path_conditions_match_model(
    demo_db: DemoDB,
    demo_conn: sqlite3.Connection,
    model: Model,
    export_type: str,
    condition: str,
    visit_condition: str,
) -> None:
    filters = {"advanced_filters": condition + visit_condition}
    req = make_request(demo_db, export_type, "csv", filters=filters)
    expected = assert_matches_model(demo_conn, model, req, filters)
    assert expected != model.rows(export_type, demo_db.date_from, demo_db.date_to)


def test_filter_semantics_pinned(demo_db: DemoDB, demo_conn: sqlite3.Connection, model: Model) -> None:
    """A few consequences of the contract, stated outright rather than only through the model."""

    def totals(filters: dict[str, Any]) -> Row:
        req = make_request(demo_db, "time_series", "json", filters=filters)
        rows = read_export(demo_conn, req)
        return tuple(sum(r[i] for r in rows) for i in (1, 4, 5, 6))  # e, pv, mc, c

    e, pv, _, c = totals({})
    # conversion_type leaves entrances and page views alone, and restricts conversions.
    e2, pv2, _, c2 = totals({"conversion_type": "purchase"})
    purchases = sum(1 for x in model.events["conversion"] if x.conversion_type == "purchase")
    assert (e2, pv2) == (e, pv) and c2 == purchases < c
    # Negative operators keep rows whose field is missing.
    no_country = sum(1 for v in demo_db.visits if v.country is None)
    es = sum(1 for v in demo_db.visits if v.country == "ES")
    assert no_country > 0
    assert totals({"advanced_filters": "country:ne:ES"})[0] == e - es
    assert totals({"advanced_filters": "country:not_in:ES"})[0] == e - es
    assert totals({"advanced_filters": "country:not_regex:^ES$"})[0] == e - es
    assert totals({"advanced_filters": "country:not_contains:E"})[0] == e - sum(
        1 for v in demo_db.visits if v.country and "E" in v.country
    )
    # Positive operators never match a missing value.
    assert totals({"advanced_filters": "country:regex:.*"})[0] == e - no_country
    # path on entrances means the landing page.
    home = sum(1 for v in demo_db.visits if v.pages[0].path == "/")
    assert totals({"advanced_filters": "path:eq:/"})[0] == home


# --- 3. Sums agree across breakdowns -----------------------------------------------------------------


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


# --- 4. Determinism and files ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_same_request_same_bytes(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str, fmt: str
) -> None:
    filters = {"advanced_filters": "device_type:ne:tablet"}
    first = export_bytes(demo_conn, make_request(demo_db, export_type, fmt, filters=filters))
    other = connect(demo_db.path)
    try:
        second = export_bytes(other, make_request(demo_db, export_type, fmt, filters=filters))
    finally:
        other.close()
    assert first == second
    assert len(first) > 100


@pytest.mark.parametrize(
    ("export_type", "fmt"),
    [("conversions", "csv"), ("microconversions", "json"), ("pages", "csv"), ("time_series", "json")],
)
def test_write_file_equals_chunks(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, tmp_path: Path, export_type: str, fmt: str
) -> None:
    req = make_request(demo_db, export_type, fmt)
    dest = tmp_path / "out" / req.file_name
    seen: list[int] = []
    info = engine.write_file(demo_conn, req, dest, progress=seen.append)
    data = export_bytes(demo_conn, req)
    assert dest.read_bytes() == data
    assert info.path == dest
    assert info.size_bytes == len(data) == dest.stat().st_size
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    n_rows = len(read_export(demo_conn, req))
    assert info.rows == n_rows > 0
    assert seen and seen[-1] == n_rows
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporary file left


def test_write_file_cancelled_leaves_nothing(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, tmp_path: Path
) -> None:
    req = make_request(demo_db, "conversions", "csv")
    dest = tmp_path / req.file_name
    with pytest.raises(Cancelled):
        engine.write_file(demo_conn, req, dest, cancelled=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_write_file_error_in_callback_leaves_nothing(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, tmp_path: Path
) -> None:
    req = make_request(demo_db, "sources", "json")
    dest = tmp_path / req.file_name

    def progress(n: int) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        engine.write_file(demo_conn, req, dest, progress=progress)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> DemoDB:
    """A second database with enough microconversions for several writer chunks."""
    return seed_demo(tmp_path_factory.mktemp("big") / "big.db", site_id="big", days=5, visits=9000, seed=3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_multi_chunk_export(big_db: DemoDB, tmp_path: Path, fmt: str) -> None:
    """An export over several chunks matches the model, cancels between chunks, and writes atomically."""
    conn = connect(big_db.path)
    try:
        req = make_request(big_db, "microconversions", fmt)
        parts = list(engine.chunks(conn, req))
        assert len([p for p in parts if p]) >= 2
        model_rows = assert_matches_model(conn, Model(big_db.visits, big_db.site.timezone), req)

        asked: list[int] = []

        def cancel_second() -> bool:
            asked.append(1)
            return len(asked) >= 2

        written: list[int] = []
        dest = tmp_path / req.file_name
        with pytest.raises(Cancelled):
            engine.write_file(conn, req, dest, progress=written.append, cancelled=cancel_second)
        assert len(asked) == 2  # asked again before the second chunk, and stopped there
        assert all(n < len(model_rows) for n in written)
        assert list(tmp_path.iterdir()) == []

        info = engine.write_file(conn, req, dest, cancelled=lambda: False)
        assert dest.read_bytes() == b"".join(parts)
        model = Model(big_db.visits, big_db.site.timezone)
        assert info.rows == len(model.selected("micro", big_db.date_from, big_db.date_to)) > 2000
        assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]
    finally:
        conn.close()


# --- Awkward values: quoting, unicode, missing values, ties, odd amounts ---------------------------------

TRICKY_TZ = "Pacific/Auckland"  # UTC+13 in January: most local days differ from UTC days


def _at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=ZoneInfo(TRICKY_TZ))


def _tricky_visits() -> list[Visit]:
    props = json.dumps({"note": 'a,b "q"\nnext', "items": [1, 2], "name": "ñandú €"})
    return [
        Visit(
            pages=[
                PageView(_at(10, 23, 59, 50), "/x,y", "odd"),
                PageView(_at(11, 0, 0, 5), '/q"uote', "odd"),
            ],
            referrer="ref,erer.example",
            utm_source="a,b",
            utm_medium="cpc",
            utm_campaign='say "hi"',
            utm_term="line\nbreak",
            utm_content=" padded ",
            country="ES",
            device_type="desktop",
            browser="Chrome",
            os="Windows",
            conversions=[Conversion(_at(11, 0, 1), "purchase", '/q"uote', "odd", 5, props)],
            microconversions=[Conversion(_at(10, 23, 59, 55), "add_to_cart", "/x,y", "odd", 0, None)],
        ),
        Visit(  # every dimension missing
            pages=[PageView(_at(11, 12), "/")],
            conversions=[Conversion(_at(11, 12, 0, 30), "lead", "/", None, 123456, "{}")],
            microconversions=[Conversion(_at(11, 12, 0, 30), "newsletter", "/", None, 0, '{"a":null}')],
        ),
        Visit(
            pages=[PageView(_at(11, 12), "/café", "blog"), PageView(_at(11, 12, 5), "/", None)],
            utm_source="ñandú €",
            utm_content="x\r\ny",
            country="ZZ",  # not a listed code: no country_name
            device_type="mobile",
            browser="Samsung Internet",
            os="Android",
            conversions=[
                Conversion(_at(11, 12, 0, 30), "refund", "/café", "blog", -250, '{"r":"x,y"}'),
                Conversion(_at(12, 9), "purchase", "/", None, 100, None),
            ],
        ),
        Visit(
            pages=[PageView(_at(12, 1), "/x,y", "odd")],
            utm_source="a,b",
            country="ES",
            device_type="tablet",
            browser="Safari",
            os="iPadOS",
            conversions=[Conversion(_at(12, 1, 0, 1), "purchase", "/x,y", "odd", 7, '"just a string"')],
        ),
        Visit(  # formulas a spreadsheet would run: guarded in CSV, as sent in JSON
            pages=[PageView(_at(12, 3), "/f", "=SUM(1)")],
            utm_source='=HYPERLINK("http://evil.example","x")',
            utm_medium="+cmd|' /C calc'!A0",
            utm_campaign="-5",
            utm_term="@SUM(A1)",
            utm_content="\tt",
            device_type="mobile",
            browser="\rb",
            os="-",
            conversions=[Conversion(_at(12, 3, 0, 10), "=1+1", "/f", "@c", 42, '{"f":"=x"}')],
            microconversions=[Conversion(_at(12, 3, 0, 20), "-micro", "/f", None, 0, None)],
        ),
    ]


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sqlite3.Connection, DemoDB, Model]]:
    path = tmp_path_factory.mktemp("tricky") / "tricky.db"
    conn = connect(path)
    site = accounts.create_site(conn, "tricky", timezone=TRICKY_TZ)
    visits = _tricky_visits()
    with transaction(conn):
        insert_visits(conn, site, visits)
    yield conn, DemoDB(path, site, visits, date(2025, 1, 10), date(2025, 1, 12)), Model(visits, TRICKY_TZ)
    conn.close()


@pytest.mark.parametrize("fmt", [*FORMATS, "xlsx", "parquet"])
@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_awkward_values_match_model(
    tricky: tuple[sqlite3.Connection, DemoDB, Model], export_type: str, fmt: str
) -> None:
    conn, db, model = tricky
    assert assert_matches_model(conn, model, make_request(db, export_type, fmt))


@pytest.mark.parametrize(
    "filters",
    [
        {"utm_source": "a,b"},
        {"utm_campaign": 'say "hi"'},
        {"advanced_filters": "path:contains:x,y"},
        {"advanced_filters": "path:contains:x,y,utm_source:ne:a,b"},
        {"advanced_filters": "utm_source:in:a,b|ñandú €"},
        {"advanced_filters": "utm_content:eq: padded "},
        {"advanced_filters": "referrer:regex:^ref,"},
        {"conversion_type": "refund"},
    ],
)
@pytest.mark.parametrize("export_type", ["sources", "pages", "time_series", "conversions"])
def test_awkward_filters_match_model(
    tricky: tuple[sqlite3.Connection, DemoDB, Model], export_type: str, filters: dict[str, Any]
) -> None:
    conn, db, model = tricky
    for fmt in FORMATS:
        assert_matches_model(conn, model, make_request(db, export_type, fmt, filters=filters), filters)
    assert model.rows(export_type, db.date_from, db.date_to, filters) != model.rows(
        export_type, db.date_from, db.date_to
    )


@pytest.mark.parametrize("export_type", ["sources", "mediums", "campaigns", "landing_pages", "conversions"])
def test_formulas_are_guarded_in_csv_unless_turned_off(
    tricky: tuple[sqlite3.Connection, DemoDB, Model], export_type: str
) -> None:
    conn, db, model = tricky
    guarded = export_bytes(conn, make_request(db, export_type, "csv")).decode()
    assert any(
        cell.startswith("'") for record in csv.reader(io.StringIO(guarded, newline="")) for cell in record
    )
    off = replace(make_request(db, export_type, "csv"), formula_guard=False)
    assert read_export(conn, off) == model.rows(export_type, db.date_from, db.date_to)
    assert export_bytes(conn, off) != guarded.encode()


def test_awkward_csv_bytes(tricky: tuple[sqlite3.Connection, DemoDB, Model]) -> None:
    conn, db, _ = tricky
    data = export_bytes(conn, make_request(db, "conversions", "csv")).decode()
    assert ',"a,b",' in data and ',"say ""hi""",' in data and ',"line\nbreak",' in data
    assert ",-2.50," in data and ",0.05," in data and ",1234.56," in data and ",0.07," in data
    assert ',"""just a string"""\r\n' in data


# --- 5. Sub-ranges and empty ranges ------------------------------------------------------------------


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


# --- 6. Estimates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        None,
        {"device_type": "tablet"},
        {"advanced_filters": "path:contains:/products/"},
        {"utm_source": "nope"},
    ],
    ids=["none", "tablet", "products", "nothing"],
)
@pytest.mark.parametrize("export_type", ["conversions", "microconversions", "time_series"])
def test_estimate_exact(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str, filters: dict[str, Any] | None
) -> None:
    for d0, d1 in [(demo_db.date_from, demo_db.date_to), (DST_FROM, DST_TO)]:
        req = make_request(demo_db, export_type, "csv", d0, d1, filters)
        est = engine.estimate(demo_conn, req, 10_000)
        assert est.estimated_rows == len(read_export(demo_conn, req))
        if export_type == "time_series":
            assert est.estimated_rows == (d1 - d0).days + 1


@pytest.mark.parametrize("export_type", AGGREGATE_TYPES)
def test_estimate_aggregates_close(demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str) -> None:
    req = make_request(demo_db, export_type, "csv")
    actual = len(read_export(demo_conn, req))
    est = engine.estimate(demo_conn, req, 10_000)
    assert actual > 0
    assert abs(est.estimated_rows - actual) <= 0.2 * actual, (est.estimated_rows, actual)
    size = len(export_bytes(demo_conn, req))
    assert size / 3 <= est.estimated_size_bytes <= size * 3, (est.estimated_size_bytes, size)
    nothing = make_request(demo_db, export_type, "csv", filters={"utm_source": "nope"})
    assert engine.estimate(demo_conn, nothing, 10_000).estimated_rows == 0


def test_estimate_background_flips_at_limit(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    req = make_request(demo_db, "microconversions", "csv")
    n = engine.estimate(demo_conn, req, 10_000).estimated_rows
    assert n > 1
    assert engine.estimate(demo_conn, req, n).will_use_background_job is True
    assert engine.estimate(demo_conn, req, n + 1).will_use_background_job is False
    assert engine.estimate(demo_conn, req, n - 1).will_use_background_job is True
    est = engine.estimate(demo_conn, req, n + 1)
    assert est.estimated_duration_seconds >= 1
    assert_human_size(est.estimated_size_human, est.estimated_size_bytes)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (850, "850 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (45230, "44.2 KB"),
        (8_500_000, "8.1 MB"),
        (1_024_000, "1000.0 KB"),
        (1024**2 - 1, "1.0 MB"),  # 1023.999 KB rounds to 1024.0: the next unit
        (3 * 1024**3, "3.0 GB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert engine.human_size(n) == text
