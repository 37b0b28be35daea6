"""Every format and compression end to end: the API's stream, its job file and the CLI give the
same bytes, with the registered Content-Type and the right file name; and each file reads back,
with the tool its users would use, as the same rows with the same types as the CSV."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner, Result

from sealexports.cli import cli
from tests.apps import Api, ApiFactory, Template
from tests.conftest import seed_demo

# (format, compression) -> (Content-Type, extension)
COMBOS: dict[tuple[str, str], tuple[str, str]] = {
    ("csv", "none"): ("text/csv; charset=utf-8", "csv"),
    ("json", "none"): ("application/json", "json"),
    ("ndjson", "none"): ("application/x-ndjson", "ndjson"),
    ("csv", "gzip"): ("application/gzip", "csv.gz"),
    ("json", "gzip"): ("application/gzip", "json.gz"),
    ("ndjson", "gzip"): ("application/gzip", "ndjson.gz"),
    ("csv", "zstd"): ("application/zstd", "csv.zst"),
    ("json", "zstd"): ("application/zstd", "json.zst"),
    ("ndjson", "zstd"): ("application/zstd", "ndjson.zst"),
    ("xlsx", "none"): ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
    ("parquet", "none"): ("application/vnd.apache.parquet", "parquet"),
}
TYPES = ("sources", "conversions", "time_series")  # an aggregate, raw events, a zero-filled series


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    db = seed_demo(tmp_path_factory.mktemp("formats") / "template.db", visits=2000, days=6)
    return Template(db.path, db.site.site_id, str(db.date_from), str(db.date_to))


def cli_bytes(api: Api, body: dict[str, Any], tmp_path: Path, *extra: str) -> tuple[bytes, str]:
    """The CLI's file for the same request, and its default name."""
    tmp_path.mkdir(exist_ok=True)
    args = [
        "--db", str(api.settings.database), "export", "--site", api.site_id,
        "--type", body["export_type"], "--from", body["date_from"], "--to", body["date_to"],
        "--format", body["format"], "--silent", "-o", str(tmp_path) + "/", *extra,
    ]  # fmt: skip
    if body.get("compression", "none") != "none":
        args += ["--compress", body["compression"]]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [path] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    data = path.read_bytes()
    path.unlink()
    return data, path.name


def rows_as_text(fmt: str, compression: str, data: bytes) -> list[dict[str, Any]]:
    """The file's rows as dicts of JSON-ish values (decompressed by the standard library)."""
    if compression == "gzip":
        data = gzip.decompress(data)
    elif compression == "zstd":
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if fmt == "json":
        return json.loads(data)  # type: ignore[no-any-return]
    if fmt == "ndjson":
        return [json.loads(line) for line in data.decode().splitlines()]
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()  # type: ignore[no-any-return]
    if fmt == "xlsx":
        [sheet] = openpyxl.load_workbook(io.BytesIO(data), read_only=True).worksheets
        header, *rows = sheet.iter_rows(values_only=True)
        return [dict(zip(header, row, strict=True)) for row in rows]
    import csv

    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


@pytest.mark.parametrize("export_type", TYPES)
@pytest.mark.parametrize(("fmt", "compression"), list(COMBOS))
def test_stream_job_and_cli_give_the_same_file(
    make: ApiFactory, template: Template, tmp_path: Path, export_type: str, fmt: str, compression: str
) -> None:
    api = make(template)
    extra = {"compression": compression} if compression != "none" else {}
    body = api.body(export_type, format=fmt, **extra)
    media_type, ext = COMBOS[fmt, compression]
    start, end = api.date_from.replace("-", ""), api.date_to.replace("-", "")
    name = f"sealmetrics_{export_type}_{start}_{end}.{ext}"

    streamed = api.stream(body)
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"] == media_type
    assert streamed.headers["content-disposition"] == f'attachment; filename="{name}"'

    out = api.created(body)
    job = out["job"]
    assert job["status"] == "completed", job
    assert (job["format"], job["compression"]) == (fmt, compression)
    downloaded = api.download(job["download_url"])
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == media_type
    assert downloaded.headers["content-disposition"] == f'attachment; filename="{name}"'

    on_disk, cli_name = cli_bytes(api, body, tmp_path / "cli")
    assert cli_name == name
    assert streamed.content == downloaded.content == on_disk == api.offline_bytes(body)
    assert job["file_size_bytes"] == len(on_disk)
    assert out["estimate"]["recommended_format"] == ("csv" if fmt in ("csv", "json", "ndjson") else fmt)

    rows = rows_as_text(fmt, compression, on_disk)
    assert len(rows) == job["actual_rows"] > 0


# --- Read back by the tools their users use ---------------------------------------------------------


def duckdb_read(path: Path, fmt: str) -> tuple[list[str], list[tuple[Any, ...]], list[Any]]:
    """DuckDB's column types and rows (properties left out: text in CSV, objects in JSON), and the
    properties as Python values."""
    reader = {
        "csv": "read_csv(?)",
        "json": "read_json(?, format = 'array')",
        "ndjson": "read_ndjson_auto(?)",
        "parquet": "read_parquet(?)",
    }[fmt]
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM {reader}", params=[str(path)])
    names = rel.columns
    kept = [f'"{n}"' for n in names if n != "properties"]
    sub = con.sql(f"SELECT {', '.join(kept)} FROM {reader}", params=[str(path)])
    types = [str(t) for t in sub.types]
    rows = sub.fetchall()
    props: list[Any] = []
    if "properties" in names:
        if fmt in ("json", "ndjson"):
            props = [r["properties"] for r in rows_as_text(fmt, *_plain(path))]
        else:
            text = con.sql(f"SELECT properties FROM {reader}", params=[str(path)]).fetchall()
            props = [None if t is None else json.loads(t) for (t,) in text]
    return types, rows, props


def _cli_export(db: Path, where: Template | Api, export_type: str, *args: str) -> Result:
    """`sealexports export` of `where`'s site and dates from `db`, in the working directory."""
    base = [
        "--db", str(db), "export", "--site", where.site_id, "--type", export_type,
        "--from", where.date_from, "--to", where.date_to,
    ]  # fmt: skip
    return CliRunner().invoke(cli, [*base, *args], catch_exceptions=False)


def _refused_export(api: Api, export_type: str, output: str) -> str:
    """`sealexports export` of the site's data to `output` in the working directory, expected to
    fail: its one Error: line."""
    result = _cli_export(api.settings.database, api, export_type, "-o", output)
    assert result.exit_code != 0
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    return error


def _plain(path: Path) -> tuple[str, bytes]:
    name = path.name
    compression = "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else "none"
    return compression, path.read_bytes()


def pandas_read(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path)  # compression from the extension (.gz, .zst)
    if fmt in ("json", "ndjson"):
        return pd.read_json(path, lines=fmt == "ndjson", dtype=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    return pd.read_excel(path, engine="openpyxl")


def _values(column: pd.Series[Any]) -> list[Any]:
    return [None if pd.isna(v) else v for v in column.tolist()]


@pytest.fixture(scope="module")
def exported(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every format and compression of three exports, written by the CLI into one folder."""
    folder = tmp_path_factory.mktemp("exported")
    for export_type in TYPES:
        for fmt, compression in COMBOS:
            args = [
                "--db", str(template.path), "export", "--site", template.site_id, "--type", export_type,
                "--from", template.date_from, "--to", template.date_to, "--silent",
                "-o", str(folder / f"{export_type}.{COMBOS[fmt, compression][1]}"),
            ]  # fmt: skip
            result = CliRunner().invoke(cli, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("export_type", TYPES)
@pytest.mark.parametrize(("fmt", "compression"), [c for c in COMBOS if c[0] != "xlsx"])
def test_duckdb_and_pandas_read_the_same_rows_and_types_as_the_csv(
    exported: Path, export_type: str, fmt: str, compression: str
) -> None:
    path = exported / f"{export_type}.{COMBOS[fmt, compression][1]}"
    base = exported / f"{export_type}.csv"
    types, rows, props = duckdb_read(path, fmt)
    csv_types, csv_rows, csv_props = duckdb_read(base, "csv")
    assert types == csv_types
    assert "DOUBLE" in types and ("BIGINT" in types or export_type == "conversions")
    if export_type != "sources":
        assert types[0] == "DATE"
    if export_type == "conversions":
        assert types[1] == "TIMESTAMP WITH TIME ZONE"
    assert rows == csv_rows and len(rows) >= 6
    assert props == csv_props

    frame, csv_frame = pandas_read(path, fmt), pandas_read(base, "csv")
    assert list(frame.columns) == list(csv_frame.columns)
    assert len(frame) == len(csv_frame)
    for column in csv_frame.columns:
        if fmt == "parquet" and column in ("date", "timestamp"):  # typed here, text in CSV
            shown = "%Y-%m-%d" if column == "date" else "%Y-%m-%dT%H:%M:%SZ"
            assert [v.strftime(shown) for v in frame[column]] == _values(csv_frame[column])
        elif column != "properties":
            assert str(frame[column].dtype) == str(csv_frame[column].dtype), column
            assert _values(frame[column]) == _values(csv_frame[column]), column


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_command_line_tools_check_compressed_files(exported: Path, compression: str) -> None:
    tool = {"gzip": "gzip", "zstd": "zstd"}[compression]
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (scripts/setup-system installs it)")
    files = sorted(exported.glob("*.gz" if compression == "gzip" else "*.zst"))
    assert len(files) == 3 * len(TYPES)
    for path in files:
        subprocess.run([tool, "-t", "-q", str(path)], check=True)
        plain = exported / path.name.rsplit(".", 1)[0]
        out = subprocess.run([tool, "-dc", str(path)], check=True, capture_output=True).stdout
        assert out == plain.read_bytes()


def test_compressed_files_are_compressed_as_written_and_reproducible(
    make: ApiFactory, template: Template
) -> None:
    """One gzip member with no name and MTIME 0; the same request twice gives the same bytes."""
    api = make(template, run_workers=False)
    body = api.body("conversions", format="ndjson", compression="gzip")
    first, second = api.stream(body).content, api.stream(body).content
    assert first == second
    assert first[:4] == b"\x1f\x8b\x08\x00" and first[4:8] == b"\0\0\0\0"  # no FNAME, MTIME 0
    plain = api.stream(api.body("conversions", format="ndjson")).content
    assert gzip.decompress(first) == plain
    assert len(first) < len(plain) / 4
    zst = api.stream(api.body("conversions", format="ndjson", compression="zstd")).content
    assert zst[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst) == plain


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        ({"compression": "brotli"}, "compression", "unknown compression 'brotli'"),
        ({"format": "csv", "compression": "gz"}, "compression", "expected one of none, gzip, zstd"),
    ],
)
def test_bad_compression_is_a_422_naming_the_field(
    make: ApiFactory, template: Template, body: dict[str, Any], field: str, text: str
) -> None:
    api = make(template, run_workers=False)
    for call in (api.create, api.estimate, api.stream):
        r = call(api.body("sources", **body))
        assert r.status_code == 422, r.text
        assert text in r.json()["detail"] or field in r.text
    assert api.files() == []


def test_estimate_follows_the_format_and_compression(make: ApiFactory, template: Template) -> None:
    api = make(template, run_workers=False)
    sizes = {}
    for fmt, compression in COMBOS:
        r = api.estimate(api.body("conversions", format=fmt, compression=compression))
        assert r.status_code == 200, r.text
        est = r.json()
        assert est["recommended_format"] == ("csv" if fmt in ("csv", "json", "ndjson") else fmt)
        sizes[fmt, compression] = est["estimated_size_bytes"]
    assert sizes["csv", "gzip"] < sizes["csv", "none"] / 3
    assert sizes["ndjson", "zstd"] < sizes["ndjson", "none"] / 3
    assert sizes["json", "none"] > sizes["csv", "none"]


@pytest.mark.parametrize(
    ("args", "name", "head"),
    [
        (["-o", "x.ndjson.zst"], "x.ndjson.zst", b"\x28\xb5\x2f\xfd"),
        (["-o", "x.csv.gz"], "x.csv.gz", b"\x1f\x8b"),
        (["-o", "x.json"], "x.json", b"[\n{"),
        (["-o", "x.gz", "--format", "json"], "x.gz", b"\x1f\x8b"),
        (["--compress", "zstd"], "sealmetrics_sources_{dates}.csv.zst", b"\x28\xb5\x2f\xfd"),
        (["--format", "ndjson", "--compress", "gzip"], "sealmetrics_sources_{dates}.ndjson.gz", b"\x1f\x8b"),
    ],
)
def test_cli_takes_format_and_compression_from_the_file_name(
    template: Template,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    name: str,
    head: bytes,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _cli_export(template.path, template, "sources", "--silent", *args)
    assert result.exit_code == 0, result.output
    dates = f"{template.date_from.replace('-', '')}_{template.date_to.replace('-', '')}"
    [path] = list(tmp_path.iterdir())
    assert path.name == name.format(dates=dates)
    assert path.read_bytes().startswith(head)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.csv.gz", "--format", "json"], "-o x.csv.gz names a csv file, but --format is json"),
        (
            ["-o", "x.csv", "--compress", "gzip"],
            "-o x.csv names an uncompressed file, but --compress is gzip",
        ),
        (["-o", "x.ndjson.zst", "--compress", "gzip"], "names a zstd file, but --compress is gzip"),
        (["-o", "x.gz", "--compress", "zstd"], "-o x.gz names a gzip file, but --compress is zstd"),
        (["--compress", "brotli"], "'brotli' is not one of"),
    ],
)
def test_cli_extension_that_contradicts_the_options_is_one_error_line(
    template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _cli_export(template.path, template, "sources", "--silent", *args)
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_openpyxl_reads_the_same_rows_and_types_as_the_csv(exported: Path) -> None:
    """Dates and timestamps as dates, counts as integers, amounts and rates as numbers shown with
    two decimals, text as text; the header bold and frozen."""
    for export_type in TYPES:
        csv_frame = pandas_read(exported / f"{export_type}.csv", "csv")
        book = openpyxl.load_workbook(exported / f"{export_type}.xlsx")
        [sheet] = book.worksheets
        assert sheet.freeze_panes == "A2"
        header, *rows = list(sheet.iter_rows())
        assert [c.value for c in header] == list(csv_frame.columns)
        assert all(c.font.b for c in header)
        assert len(rows) == len(csv_frame)
        for row, (_, expected) in zip(rows, csv_frame.iterrows(), strict=True):
            for cell, name in zip(row, csv_frame.columns, strict=True):
                want = expected[name]
                if pd.isna(want):
                    assert cell.value is None, (name, cell.value)
                elif name == "date":
                    assert cell.is_date and cell.value.date().isoformat() == want
                elif name == "timestamp":
                    assert cell.is_date and cell.value.strftime("%Y-%m-%dT%H:%M:%SZ") == want
                elif csv_frame[name].dtype == "int64":
                    assert type(cell.value) is int and cell.value == want, name
                elif csv_frame[name].dtype == "float64":
                    assert cell.number_format == "0.00" and cell.value == pytest.approx(want, abs=1e-9)
                else:
                    assert cell.data_type == "s" and cell.value == want, name
    frame = pandas_read(exported / "conversions.xlsx", "xlsx")
    assert str(frame["amount"].dtype) == "float64"
    assert str(frame["timestamp"].dtype).startswith("datetime64")


def test_xlsx_over_excels_rows_is_refused_before_any_work(
    make: ApiFactory, template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sheet holds 1,048,576 rows, the header included: more is a 413 from the create and the
    stream, and one Error: line from the CLI, with no job and no file; csv is recommended."""
    from sealexports.exports import formats

    api = make(template, run_workers=False)
    body = api.body("conversions", format="xlsx")
    rows = api.estimate(body).json()["estimated_rows"]
    assert rows > 10
    # The limit lowered to one row under this export's count (the real one needs a million rows).
    monkeypatch.setitem(formats.FORMATS, "xlsx", replace(formats.FORMATS["xlsx"], max_rows=rows - 1))
    for call in (api.create, api.stream):
        r = call(body)
        assert r.status_code == 413, r.text
        assert f"{rows:,} rows, and an xlsx sheet holds at most {rows - 1:,}" in r.json()["detail"]
    assert api.estimate(body).json()["recommended_format"] == "csv"
    assert api.list().json()["total"] == 0 and api.files() == []
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    assert "an xlsx sheet holds at most" in _refused_export(api, "conversions", "x.xlsx")
    assert list(out.iterdir()) == []
    # At the limit it is written.
    monkeypatch.setitem(formats.FORMATS, "xlsx", replace(formats.FORMATS["xlsx"], max_rows=rows))
    assert api.stream(body).status_code == 200


def test_xlsx_is_the_same_bytes_whenever_it_is_written(make: ApiFactory, template: Template) -> None:
    """The workbook's creation time is fixed (1980-01-01, as its zip entries'), not the clock's."""
    api = make(template, run_workers=False)
    body = api.body("sources", format="xlsx")
    first = api.stream(body).content
    time.sleep(1.1)  # a clock-dated workbook would differ now (its time has seconds)
    assert api.stream(body).content == first
    with zipfile.ZipFile(io.BytesIO(first)) as z:
        core = z.read("docProps/core.xml").decode()
        assert "<dcterms:created" in core and "1980-01-01T00:00:00Z" in core
        assert {i.date_time[:3] for i in z.infolist()} <= {(1980, 1, 1), (1980, 1, 31)}


def test_parquet_columns_are_typed(exported: Path) -> None:
    """pyarrow's schema: DATE, TIMESTAMP UTC, INT64 counts, DOUBLE amounts and rates, STRING text
    and properties (JSON text); more than one row group when the rows pass ROW_GROUP_ROWS."""
    conversions = pq.read_table(exported / "conversions.parquet")
    assert conversions.schema.field("date").type == pa.date32()
    assert conversions.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert conversions.schema.field("amount").type == pa.float64()
    assert conversions.schema.field("properties").type == pa.string()
    first = conversions.to_pylist()[0]
    csv_first = rows_as_text("csv", "none", (exported / "conversions.csv").read_bytes())[0]
    assert first["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ") == csv_first["timestamp"]
    assert first["date"].isoformat() == csv_first["date"]
    assert json.loads(first["properties"]) == json.loads(csv_first["properties"])
    sources = pq.read_table(exported / "sources.parquet").schema
    assert sources.field("entrances").type == pa.int64()
    assert sources.field("bounce_rate").type == pa.float64()
    assert sources.field("utm_source").type == pa.string()


def test_parquet_is_written_in_row_groups(
    make: ApiFactory, template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row groups of ROW_GROUP_ROWS, each sent as it is written: the stream's first chunks
    come before the last rows are read, and the file reads back whole."""
    from sealexports.exports import parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 30)
    api = make(template, run_workers=False)
    body = api.body("conversions", format="parquet")
    with api.conn() as conn:
        from sealexports.exports import engine
        from sealexports.exports.request import build_request

        req = build_request(api.site_id, "conversions", "parquet", api.date_from, api.date_to)
        parts = [len(p) for p in engine.chunks(conn, req)]
    meta = pq.ParquetFile(io.BytesIO(api.stream(body).content)).metadata
    assert meta.num_row_groups == -(-meta.num_rows // 30) > 3
    assert len([n for n in parts if n]) >= meta.num_row_groups


def test_parquet_without_pyarrow_is_refused_saying_which_extra(
    make: ApiFactory, template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow is an extra: without it parquet is a 501 naming `sealexports[parquet]`, before
    any work, and one Error: line from the CLI."""
    api = make(template, run_workers=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` meets when it is absent
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    for call in (api.create, api.estimate, api.stream):
        r = call(api.body("sources", format="parquet"))
        assert r.status_code == 501, r.text
        assert r.json()["error"]["code"] == "not_installed"
        assert "pip install 'sealexports[parquet]'" in r.json()["detail"]
    assert api.list().json()["total"] == 0 and api.files() == []
    assert api.stream(api.body("sources", format="xlsx")).status_code == 200  # the rest still works
    monkeypatch.chdir(tmp_path)
    assert "sealexports[parquet]" in _refused_export(api, "sources", "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_downloads_ignore_accept_encoding(make: ApiFactory, template: Template) -> None:
    """The file as stored, whatever Accept-Encoding says: its Content-Length, ETag and byte ranges
    describe the bytes sent (README: why no on-the-fly gzip)."""
    api = make(template)
    job = api.created(api.body("conversions", format="ndjson"))["job"]
    plain = api.download(job["download_url"])
    url = job["download_url"].removeprefix("http://testserver.local")
    asked = api.client.get(url, headers={"Accept-Encoding": "gzip"})
    assert asked.status_code == 200
    assert "content-encoding" not in asked.headers
    assert asked.headers["content-length"] == str(len(plain.content)) == str(job["file_size_bytes"])
    assert asked.content == plain.content
