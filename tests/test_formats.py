"""Every format and compression end to end: the API's stream, its job file and the CLI give the
same bytes, with the registered Content-Type and the right file name; and each file reads back,
with the tool its users would use, as the same rows with the same types as the CSV."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sealexports.cli import cli
from tests.apps import Api, ApiFactory, Template
from tests.conftest import seed_demo

# (format, compression) -> (Content-Type, extension)
COMBOS: dict[tuple[str, str], tuple[str, str]] = {
    ("csv", "none"): ("text/csv; charset=utf-8", "csv"),
    ("json", "none"): ("application/json", "json"),
    ("ndjson", "none"): ("application/x-ndjson", "ndjson"),
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
    """The file's rows as dicts of JSON-ish values, read by the usual tools for the format."""
    assert compression == "none"
    if fmt == "json":
        return json.loads(data)  # type: ignore[no-any-return]
    if fmt == "ndjson":
        return [json.loads(line) for line in data.decode().splitlines()]
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
    assert job["format"] == fmt
    downloaded = api.download(job["download_url"])
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == media_type
    assert downloaded.headers["content-disposition"] == f'attachment; filename="{name}"'

    on_disk, cli_name = cli_bytes(api, body, tmp_path / "cli")
    assert cli_name == name
    assert streamed.content == downloaded.content == on_disk == api.offline_bytes(body)
    assert job["file_size_bytes"] == len(on_disk)
    assert out["estimate"]["recommended_format"] == fmt

    rows = rows_as_text(fmt, compression, on_disk)
    assert len(rows) == job["actual_rows"] > 0
