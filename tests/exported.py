"""What the export tests share: requests on the demo database, the files parsed back into typed
rows (asserting the contract's formatting on the way), and the comparison with the model."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sealexports.exports import engine
from sealexports.exports.request import ExportRequest, build_request
from tests.conftest import DemoDB
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
