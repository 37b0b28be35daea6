"""Raw exports formatted inside SQLite are byte-identical to the csv/orjson writers, for any
values: the oracle here is the generic writer over plain rows."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sealexports.errors import Cancelled
from sealexports.exports import engine, raw
from sealexports.exports.request import ExportRequest, build_request
from sealexports.exports.writers import chunks_for
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits

NASTY = [
    "plain", "with,comma", 'with "quotes"', "line\nbreak", "carriage\rreturn", "crlf\r\nboth",
    "ünïcødé ✓ 🚀", "tab\there", "", " leading space", "trailing space ", '"', ",", "a,b,\"c\"\n",
    "\x01control", "back\\slash",
    # formulas a spreadsheet would run (CSV injection), and NULs that C strings stop at
    '=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-5", "@SUM(A1)", "\tlead tab",
    "\rlead cr", "buy\0,INJECTED", "\0", "\0=1+1", "=", "a=b", "x-y",
]  # fmt: skip
PROPERTIES = [None, "{}", "[]", '{"a":"b,c"}', '{"q":"\\"x\\""}', "3.5", '"str"', '{"u":"é✓"}', "[1,2]"]


def _visits(n: int) -> list[Visit]:
    start = datetime(2025, 3, 28, 22, 0, tzinfo=UTC)
    visits = []
    for i in range(n):
        value = NASTY[i % len(NASTY)] or None
        ts = start + timedelta(minutes=7 * i)
        path = f"/p/{NASTY[(i * 3) % len(NASTY)]}"
        visits.append(
            Visit(
                pages=[PageView(ts, path, value)],
                referrer=value,
                utm_source=NASTY[(i + 1) % len(NASTY)] or None,
                utm_medium=value,
                utm_campaign=NASTY[(i + 5) % len(NASTY)],
                country="ES" if i % 2 else None,
                device_type=value,
                browser=value,
                os=value,
                conversions=[
                    Conversion(
                        ts,
                        value or "purchase",
                        path,
                        value,
                        (i * 137) % 100_000 - 50,
                        PROPERTIES[i % len(PROPERTIES)],
                    )
                ],
                microconversions=[
                    Conversion(
                        ts, value or "add_to_cart", path, None, 0, PROPERTIES[(i + 3) % len(PROPERTIES)]
                    )
                ],
            )
        )
    return visits


@pytest.fixture(scope="module")
def nasty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "nasty.db"
    conn = connect(path)
    site = accounts.create_site(conn, "nasty", timezone="Europe/Madrid")
    with transaction(conn):
        insert_visits(conn, site, _visits(3000))
    conn.close()
    return path


def _oracle(conn: sqlite3.Connection, req: ExportRequest) -> bytes:
    return b"".join(
        chunks_for(req.format, req.type.columns, engine.rows(conn, req), formula_guard=req.formula_guard)
    )


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("export_type", ["conversions", "microconversions"])
def test_raw_exports_match_the_generic_writers_byte_for_byte(
    nasty_db: Path, tmp_path: Path, fmt: str, export_type: str, guard: bool
) -> None:
    conn = connect(nasty_db)
    req = build_request("nasty", export_type, fmt, "2025-03-01", "2025-04-30", formula_guard=guard)
    expected = _oracle(conn, req)
    assert b"".join(engine.chunks(conn, req)) == expected
    info = engine.write_file(conn, req, tmp_path / f"out.{fmt}")
    assert (tmp_path / f"out.{fmt}").read_bytes() == expected
    assert info.rows == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out.{fmt}"]  # no temporary file left
    if fmt == "json":
        assert len(json.loads(expected)) == 3000


def _expected_cell(value: object, kind: str, guard: bool) -> str:
    """What a CSV cell should read back as, worked out on its own from the stored value."""
    if value is None:
        return ""
    if kind == "dec2":
        return f"{value:.2f}"
    text = str(value).replace("\0", "")
    if guard and kind == "text" and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("export_type", ["conversions", "microconversions"])
def test_raw_csv_cells_are_whole_and_guarded_against_formulas(
    nasty_db: Path, export_type: str, guard: bool
) -> None:
    conn = connect(nasty_db)
    req = build_request("nasty", export_type, "csv", "2025-03-01", "2025-04-30", formula_guard=guard)
    data = b"".join(engine.chunks(conn, req)).decode()
    assert "\0" not in data
    header, *records = list(csv.reader(io.StringIO(data, newline="")))
    assert header == req.type.header
    stored = list(engine.rows(conn, req))
    assert len(records) == len(stored) == 3000
    kinds = [c.kind for c in req.type.columns]
    for record, row in zip(records, stored, strict=True):
        assert record == [_expected_cell(v, k, guard) for v, k in zip(row, kinds, strict=True)]
    cells = [cell for record in records for cell in record]
    assert ('\'=HYPERLINK("http://evil.example","x")' in cells) is guard
    assert ("buy,INJECTED" in cells) and ("'buy,INJECTED" not in cells)
    if export_type == "conversions":  # amounts are numbers the export computes: never guarded
        amounts = [r[req.type.header.index("amount")] for r in records]
        assert any(a.startswith("-") for a in amounts) and not any(a.startswith("'") for a in amounts)


def test_cancelling_an_export_leaves_no_files(
    nasty_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(raw, "CHUNK_ROWS", 50)
    conn = connect(nasty_db)
    req = build_request("nasty", "microconversions", "csv", "2025-03-01", "2025-04-30")
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        engine.write_file(conn, req, tmp_path / "out.csv", cancelled=cancelled)
    assert list(tmp_path.iterdir()) == []
