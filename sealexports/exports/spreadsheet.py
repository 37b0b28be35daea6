"""XLSX for Excel users (XlsxWriter): one sheet, a bold frozen header row with a filter, dates
as dates, numbers as numbers, and text that is never run as a formula.

XlsxWriter's constant_memory mode writes each row to a temporary file as soon as the next one
starts, so memory stays flat whatever the row count. The zip is put together when the workbook
closes, into a temporary file that is then sent in chunks: an XLSX's first byte is only known
once its last row is written.

Text goes through write_string, never write(): a visitor's `=HYPERLINK(...)` is a text cell
(unlike CSV, where only a leading `'` stops a spreadsheet). A cell holds at most 32,767
characters (Excel's limit): longer text is cut there. Timestamps are UTC (Excel has no time zone).

The same request gives the same bytes: XlsxWriter dates the zip's entries 1980-01-01 (or
1980-01-31) whatever the time, and the workbook's creation time, which it would take from the
clock, is set to the same fixed 1980-01-01 (the file's real time is the job's `completed_at`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sealexports.exports.formats import XLSX_MAX_ROWS, check_rows
from sealexports.exports.raw import Pieces
from sealexports.exports.types import Column

CREATED = datetime(1980, 1, 1)  # the workbook's creation time: fixed, as its zip entries' are
PROGRESS_ROWS = 2000  # rows between two (empty) pieces: progress and cancel checks
READ_BYTES = 1 << 20
_WIDTHS = {"text": 24, "json": 40, "int": 12, "dec2": 12, "date": 11, "timestamp": 19}


def pieces(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> Pieces:
    """(bytes, rows): empty pieces while rows are written, then the file's bytes."""
    import xlsxwriter

    # XlsxWriter's own temporary files (a sheet's rows) go in a folder of ours, so that an export
    # stopped half-way (cancelled, failed) leaves none behind: the workbook is closed only when
    # every row is in, as closing builds the whole zip.
    with (
        tempfile.TemporaryDirectory(prefix="sealexports-xlsx-") as tmp,
        tempfile.TemporaryFile(dir=tmp) as out,
    ):
        book = xlsxwriter.Workbook(out, {"constant_memory": True, "strings_to_numbers": False, "tmpdir": tmp})
        book.set_properties({"created": CREATED})
        sheet = book.add_worksheet("export")
        bold = book.add_format({"bold": True})
        formats = {
            "dec2": book.add_format({"num_format": "0.00"}),
            "date": book.add_format({"num_format": "yyyy-mm-dd"}),
            "timestamp": book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
        }
        for i, c in enumerate(columns):
            sheet.set_column(i, i, _WIDTHS[c.kind], formats.get(c.kind))
        sheet.freeze_panes(1, 0)
        for i, c in enumerate(columns):
            sheet.write_string(0, i, c.name, bold)
        writers = [_writer(sheet, c.kind, formats.get(c.kind)) for c in columns]
        n = 0
        for n, row in enumerate(rows, 1):
            if n > XLSX_MAX_ROWS - 1:  # more rows came in since the count: fail, never cut the file
                check_rows("xlsx", n)
            for i, value in enumerate(row):
                if value is not None:
                    writers[i](n, i, value)
            if n % PROGRESS_ROWS == 0:
                yield b"", PROGRESS_ROWS
        sheet.autofilter(0, 0, max(n, 1), len(columns) - 1)
        book.close()
        yield b"", n % PROGRESS_ROWS
        out.seek(0)
        while data := out.read(READ_BYTES):
            yield data, 0


def _writer(sheet: Any, kind: str, fmt: Any) -> Any:
    """The cell writer for a column kind: (row, col, value) -> None."""
    if kind in ("int", "dec2"):
        return lambda r, c, v: sheet.write_number(r, c, v, fmt)
    if kind == "date":
        return lambda r, c, v: sheet.write_datetime(r, c, date.fromisoformat(v), fmt)
    if kind == "timestamp":  # 2025-01-01T07:01:49Z, UTC: a naive datetime (Excel has no zones)
        return lambda r, c, v: sheet.write_datetime(r, c, datetime.fromisoformat(v[:19]), fmt)
    return lambda r, c, v: sheet.write_string(r, c, v)
