"""Manifests: a file checked against its manifest (SHA-256, bytes, rows and columns read back),
from the API and from `export --manifest` alike; an export stopped early is failed, never short."""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import json
import os
import sqlite3
import time
from datetime import UTC
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import zstandard
from click.testing import CliRunner

from sealexports.cli import cli
from sealexports.errors import QueryTimeout
from sealexports.jobs.runner import run_export
from sealexports.storage import export_jobs
from sealexports.storage.database import connect
from sealexports.storage.deadline import Deadline
from sealexports.tokens import DownloadTokens
from tests.apps import ApiFactory, Template
from tests.conftest import DemoDB


def _template(demo_db: DemoDB) -> Template:
    return Template(demo_db.path, demo_db.site.site_id, str(demo_db.date_from), str(demo_db.date_to))


def _read_back(content: bytes, fmt: str) -> tuple[list[str], int]:
    """The column names and the number of data rows, as a reader of the format sees them."""
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(content.decode("utf-8"), newline="")))
        return rows[0], len(rows) - 1
    if fmt == "ndjson":
        objects = [json.loads(line) for line in content.decode("utf-8").splitlines()]
    else:
        objects = json.loads(content)
    return (list(objects[0]) if objects else []), len(objects)


def check(content: bytes, manifest: dict[str, Any]) -> None:
    """What a tool would do with a file and its manifest."""
    f = manifest["file"]
    assert f["sha256"] == hashlib.sha256(content).hexdigest()
    assert f["size_bytes"] == len(content)
    compression = manifest["request"]["compression"]
    if compression == "gzip":
        content = gzip.decompress(content)
    elif compression == "zstd":
        content = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(content)).read()
    names, rows = _read_back(content, manifest["request"]["format"])
    assert rows == f["rows"]
    if rows:
        assert names == [c["name"] for c in manifest["columns"]]


def _latest_event(demo_db: DemoDB, date_from: str, date_to: str) -> str:
    """The newest event time on those (site) days, from the visits the demo inserted."""
    tz = ZoneInfo(demo_db.site.timezone)
    times = [
        ts
        for v in demo_db.visits
        for ts in (*(p.ts for p in v.pages), *(c.ts for c in (*v.conversions, *v.microconversions)))
        if date_from <= ts.astimezone(tz).date().isoformat() <= date_to
    ]
    return max(times).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("export_type", "fmt", "filters", "compression"),
    [
        ("microconversions", "csv", {"country": "ES"}, "none"),
        ("sources", "json", {}, "none"),
        ("pages", "ndjson", {"content_grouping": "blog"}, "none"),
        ("time_series", "csv", {"device_type": "mobile"}, "none"),
        ("conversions", "csv", {}, "gzip"),
        ("microconversions", "ndjson", {"country": "ES"}, "zstd"),
    ],
)
def test_a_download_matches_its_manifest(
    make: ApiFactory, demo_db: DemoDB, export_type: str, fmt: str, filters: dict[str, Any], compression: str
) -> None:
    api = make(_template(demo_db))
    job = api.created(api.body(export_type, format=fmt, filters=filters, compression=compression))["job"]
    assert job["status"] == "completed"
    content = api.download(job["download_url"]).content
    r = api.client.get(
        f"/api/v1/exports/{job['job_id']}/manifest", params=api.params(None), headers=api.headers
    )
    assert r.status_code == 200, r.text
    m = r.json()
    check(content, m)
    assert m["job_id"] == job["job_id"] and m["manifest_version"] == 1
    assert m["request"] == {
        "site_id": "demo", "export_type": export_type, "date_from": api.date_from, "date_to": api.date_to,
        "filters": filters, "format": fmt, "compression": compression,
    }  # fmt: skip
    assert m["timezone"] == "Europe/Madrid"
    assert m["file"]["rows"] == job["actual_rows"] and m["file"]["size_bytes"] == job["file_size_bytes"]
    assert m["generated_at"] == job["completed_at"]
    assert m["freshness"]["latest_event_at"] == _latest_event(demo_db, api.date_from, api.date_to)
    types = {c["name"]: c["type"] for c in m["columns"]}
    if export_type in ("conversions", "microconversions"):
        assert types["date"] == "date" and types["timestamp"] == "timestamp"
        assert types["properties"] == "json" and types["path"] == "string"
    else:
        assert types["entrances"] == "integer"
        assert export_type == "pages" or types["revenue"] == "decimal"


def test_freshness_follows_the_range(make: ApiFactory, demo_db: DemoDB) -> None:
    api = make(_template(demo_db))
    day = "2025-03-20"
    job = api.created(api.body("sources", date_from=api.date_from, date_to=day))["job"]
    m = api.client.get(
        f"/api/v1/exports/{job['job_id']}/manifest", params=api.params(None), headers=api.headers
    )
    assert m.json()["freshness"]["latest_event_at"] == _latest_event(demo_db, api.date_from, day)


def test_no_manifest_before_the_file_exists(make: ApiFactory, demo_db: DemoDB) -> None:
    api = make(_template(demo_db), run_workers=False, sync_row_limit=1)
    job = api.created(api.body("sources"))["job"]
    assert job["status"] == "pending"
    r = api.client.get(
        f"/api/v1/exports/{job['job_id']}/manifest", params=api.params(None), headers=api.headers
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    missing = api.client.get("/api/v1/exports/nope/manifest", params=api.params(None), headers=api.headers)
    assert missing.status_code == 404
    assert (
        api.client.get(f"/api/v1/exports/{job['job_id']}/manifest", params=api.params(None)).status_code
        == 401
    )


def test_cli_writes_the_same_manifest(make: ApiFactory, demo_db: DemoDB, tmp_path: Path) -> None:
    api = make(_template(demo_db))
    body = api.body("conversions", filters={"device_type": "desktop"})
    job = api.created(body)["job"]
    served = api.client.get(
        f"/api/v1/exports/{job['job_id']}/manifest", params=api.params(None), headers=api.headers
    )
    out, manifest_file = tmp_path / "c.csv", tmp_path / "c.manifest.json"
    result = CliRunner().invoke(
        cli,
        ["--db", str(api.settings.database), "export", "--site", "demo", "--type", "conversions",
         "--from", api.date_from, "--to", api.date_to, "--filter", "device_type=desktop",
         "-o", str(out), "--manifest", str(manifest_file), "--silent"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = json.loads(manifest_file.read_text())
    check(out.read_bytes(), written)
    a, b = dict(written), dict(served.json())
    assert written["file"]["name"] == "c.csv"
    for m in (a, b):
        m.pop("job_id"), m.pop("generated_at"), m["file"].pop("name")
    assert a == b  # the same bytes, rows, columns and freshness, whichever shell made it
    assert out.read_bytes() == api.download(job["download_url"]).content


def test_cli_manifest_needs_a_file(demo_db: DemoDB, tmp_path: Path) -> None:
    args = ["--db", str(demo_db.path), "export", "--site", "demo", "--type", "sources",
            "--from", str(demo_db.date_from), "--to", str(demo_db.date_to)]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "-o", "-", "--manifest", str(tmp_path / "m.json")])
    assert result.exit_code == 1 and "Error: --manifest describes a file" in result.output
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "x.csv"), "--manifest", "/nowhere/m.json"])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "x.csv").exists()


# --- never completed short ------------------------------------------------------------------------


def _claimed_job(make: ApiFactory, demo_db: DemoDB) -> tuple[Any, str]:
    """A background job, claimed by this test as a worker would (owner "test")."""
    api = make(_template(demo_db), run_workers=False, sync_row_limit=1)
    job = api.created(api.body("microconversions"))["job"]
    assert job["status"] == "pending"
    conn = connect(api.settings.database, migrate=False)
    claimed = export_jobs.claim_next(conn, "test", time.time(), time.time() + 3600)
    conn.close()
    assert claimed is not None and claimed.job_id == job["job_id"]
    return api, job["job_id"]


def test_an_export_past_its_deadline_fails_and_leaves_no_file(make: ApiFactory, demo_db: DemoDB) -> None:
    api, job_id = _claimed_job(make, demo_db)
    conn = connect(api.settings.database, migrate=False)
    exports_dir = api.settings.exports_dir

    fired = []

    class AfterFirstChunk(Deadline):
        """Out of time between the file's first and second chunks."""

        def check(self) -> None:
            if list(exports_dir.glob(".*.tmp")):
                fired.append(1)
                if len(fired) == 2:  # the first check is before the first chunk
                    raise QueryTimeout(self.timeout_message)
            super().check()

    deadline = AfterFirstChunk(3600, "the export took too long")
    run_export(
        conn, api.settings.exports_dir, DownloadTokens("s" * 32, 60), job_id, "test", deadline=deadline
    )
    job = export_jobs.get_job(conn, job_id)
    conn.close()
    assert len(fired) == 2, "the export had one chunk: nothing to stop half-way"
    assert job.status == "failed" and job.error_message == "the export took too long"
    assert job.actual_rows is None and job.sha256 is None and job.download_token is None
    assert list(api.settings.exports_dir.iterdir()) == []


def test_a_full_disk_fails_the_export(
    make: ApiFactory, demo_db: DemoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, job_id = _claimed_job(make, demo_db)
    conn = connect(api.settings.database, migrate=False)
    real_fdopen = os.fdopen

    class FillingDisk:
        """The export's file, on a disk that is full after 100 KB."""

        def __init__(self, f: Any) -> None:
            self.f, self.written = f, 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self.f.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def __enter__(self) -> FillingDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: FillingDisk(real_fdopen(*a, **k)))
    run_export(conn, api.settings.exports_dir, DownloadTokens("s" * 32, 60), job_id, "test")
    monkeypatch.undo()
    job = export_jobs.get_job(conn, job_id)
    conn.close()
    assert job.status == "failed" and "No space left on device" in (job.error_message or "")
    assert job.actual_rows is None and list(api.settings.exports_dir.iterdir()) == []


def test_latest_event_at_of_an_empty_range(tmp_path: Path) -> None:
    from sealexports.storage.visits import latest_event_at

    conn: sqlite3.Connection = connect(tmp_path / "e.db")
    assert latest_event_at(conn, "nosite", "2025-01-01", "2025-01-31") is None
    conn.close()
