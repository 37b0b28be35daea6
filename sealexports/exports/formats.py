"""The file formats and compressions an export can be written in: names, extensions, registered
Content-Types, size estimates and the most rows a file can hold.

csv, json and ndjson are text, written as a stream of byte chunks, and can be compressed as they
are written (gzip, zstd). xlsx and parquet are files with their own compression inside (a zip,
compressed column chunks): they are written through a file object, never compressed again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealexports.errors import InvalidRequest, TooLarge

XLSX_MAX_ROWS = 1_048_576  # Excel's rows per sheet, the header row included


@dataclass(frozen=True)
class Format:
    name: str
    extension: str
    media_type: str  # IANA's registered type (Litestar adds "; charset=utf-8" to text/*)
    compressible: bool  # text written as chunks: may be gzip'd or zstd'd as it is written
    size_factor: float  # estimated bytes per row, times the CSV row's (JSON for ndjson)
    max_rows: int = 0  # data rows a file can hold (0: no limit)
    overhead_bytes: int = 0  # what a file has whatever its rows (a zip's parts, a footer)
    description: str = ""


@dataclass(frozen=True)
class Compression:
    name: str
    suffix: str  # appended to the format's extension: .csv.gz
    media_type: str
    size_factor: float  # compressed size over plain CSV, measured on demo exports (about)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("csv", "csv", "text/csv", True, 1.0, description="RFC 4180, header row"),
        Format("json", "json", "application/json", True, 1.0, description="one array of objects"),
        Format("ndjson", "ndjson", "application/x-ndjson", True, 1.0, description="one object a line"),
        Format(
            "xlsx",
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            False,
            0.45,
            max_rows=XLSX_MAX_ROWS - 1,
            overhead_bytes=5_000,
            description="one sheet, bold frozen header",
        ),
        Format(
            "parquet",
            "parquet",
            "application/vnd.apache.parquet",
            False,
            0.15,
            overhead_bytes=3_000,
            description="typed columns, row groups (needs the parquet extra: pyarrow)",
        ),
    )
}

COMPRESSIONS: dict[str, Compression] = {
    c.name: c
    for c in (
        Compression("none", "", "", 1.0),
        Compression("gzip", ".gz", "application/gzip", 0.12),
        Compression("zstd", ".zst", "application/zstd", 0.14),
    )
}

# What `-o x.csv.gz` means: the last suffix names a compression, the one before it a format.
_BY_SUFFIX = {c.suffix: c.name for c in COMPRESSIONS.values() if c.suffix}
_BY_EXTENSION = {f.extension: f.name for f in FORMATS.values()}


def check(fmt: object, compression: object) -> tuple[str, str]:
    """(format, compression) from raw values (None: the defaults, csv and none);
    InvalidRequest names the bad field."""
    fmt = "csv" if fmt is None else fmt
    compression = "none" if compression is None else compression
    if fmt not in FORMATS:
        raise InvalidRequest(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})", field="format")
    if compression not in COMPRESSIONS:
        raise InvalidRequest(
            f"unknown compression {compression!r} (expected one of {', '.join(COMPRESSIONS)})",
            field="compression",
        )
    if compression != "none" and not FORMATS[str(fmt)].compressible:
        text = ", ".join(f.name for f in FORMATS.values() if f.compressible)
        raise InvalidRequest(
            f"format {fmt} is compressed inside its own file: compression must be none "
            f"(gzip and zstd are for {text})",
            field="compression",
        )
    if fmt == "parquet":
        from sealexports.exports.parquet import require

        require()
    return str(fmt), str(compression)


def extension(fmt: str, compression: str) -> str:
    """csv, csv.gz, ndjson.zst, xlsx."""
    return FORMATS[fmt].extension + COMPRESSIONS[compression].suffix


def media_type(fmt: str, compression: str) -> str:
    """The file's Content-Type: a compressed file is served as what it is (application/gzip), not
    with Content-Encoding, so that clients save it as sent rather than unpacking it."""
    return COMPRESSIONS[compression].media_type or FORMATS[fmt].media_type


def from_file_name(name: str) -> tuple[str | None, str | None]:
    """(format, compression) that a file name's extension says, None for what it does not:
    x.ndjson.zst -> (ndjson, zstd); x.gz -> (None, gzip); x.txt -> (None, None)."""
    stem, dot, last = name.rpartition(".")
    if not dot or not stem:
        return None, None
    compression = _BY_SUFFIX.get("." + last.lower())
    if compression is None:
        return _BY_EXTENSION.get(last.lower()), None
    inner = stem.rpartition(".")
    return (_BY_EXTENSION.get(inner[2].lower()) if inner[1] else None), compression


def size_factor(fmt: str, compression: str) -> float:
    """Estimated bytes per row over the format's plain text row (CSV's, JSON's for ndjson)."""
    ratio = COMPRESSIONS[compression].size_factor
    if compression != "none" and fmt in ("json", "ndjson"):
        ratio *= 0.6  # the keys repeated on every row compress away
    return FORMATS[fmt].size_factor * ratio


def check_rows(fmt: str, rows: int) -> None:
    """TooLarge (413) when a file of `fmt` cannot hold `rows` rows: refused before any work,
    never a broken or silently cut file."""
    limit = FORMATS[fmt].max_rows
    if limit and rows > limit:
        raise TooLarge(
            f"Export too large for {fmt}: {rows:,} rows, and an {fmt} sheet holds at most {limit:,} "
            "(Excel's 1,048,576 rows, the header included). Narrow the date range, add filters, "
            "or choose csv, ndjson or parquet."
        )


def recommended(fmt: str, rows: int) -> str:
    """The format we suggest: among the text formats the smallest file (csv); a typed format
    (xlsx, parquet) as asked, if its file can hold the rows, else csv."""
    limit = FORMATS[fmt].max_rows
    if FORMATS[fmt].compressible or (limit and rows > limit):
        return "csv"
    return fmt
