"""A client generated from our OpenAPI schema by an independent generator (openapi-python-client),
untouched, works against a live server: create, poll, download, estimate, list, stream, delete,
send events. Generating it gives no warning, and using it raises none."""

from __future__ import annotations

import datetime
import importlib
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live
from tests.conftest import DemoDB, say, seed_demo

PACKAGE = "sealexports_client"
# The generator's own options: no ruff run afterwards (the test does not need its formatting).
GENERATOR_CONFIG = "post_hooks: []\n"
OUTPUT = ("--output-path", PACKAGE, "--config", "config.yml")
SYNC_ROW_LIMIT = 200


def _generate(schema: dict[str, Any], workdir: Path) -> str:
    """Generate the client package into workdir; the generator's whole output."""
    (workdir / "openapi.json").write_text(json.dumps(schema))
    (workdir / "config.yml").write_text(GENERATOR_CONFIG)
    generator = Path(sys.executable).parent / "openapi-python-client"
    result = subprocess.run(
        [str(generator), "generate", "--path", "openapi.json", "--meta", "none", *OUTPUT],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[live.Server, DemoDB, str, str]]:
    root = tmp_path_factory.mktemp("generated")
    demo = seed_demo(root / "live.db", visits=1500, days=7)
    conn = connect(demo.path)
    read_key, write_key = create_key(conn, "demo"), create_key(conn, "demo", scope="write")
    conn.close()
    with live.running(demo.path, root, env={"SEALEXPORTS_SYNC_ROW_LIMIT": str(SYNC_ROW_LIMIT)}) as server:
        yield server, demo, read_key, write_key


@pytest.fixture(scope="module")
def client_package(
    site: tuple[live.Server, DemoDB, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    server = site[0]
    schema = requests.get(f"{server.url}/schema/openapi.json", timeout=10).json()
    workdir = tmp_path_factory.mktemp("client")
    output = _generate(schema, workdir)
    assert "warning" not in output.lower(), output  # old schema: ndjson body, Litestar's 400 on /sites
    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _expected(
    demo: DemoDB, export_type: str, fmt: str = "csv", filters: dict[str, Any] | None = None
) -> bytes:
    conn = connect(demo.path)
    try:
        req = build_request("demo", export_type, fmt, str(demo.date_from), str(demo.date_to), filters)
        return b"".join(engine.chunks(conn, req))
    finally:
        conn.close()


def test_schema_names_operations_and_keys(site: tuple[live.Server, DemoDB, str, str]) -> None:
    schema = requests.get(f"{site[0].url}/schema/openapi.json", timeout=10).json()
    ids = {op["operationId"] for item in schema["paths"].values() for op in item.values()}
    assert {
        "createExport", "estimateExport", "listExports", "getExport", "deleteExport",
        "downloadExport", "streamExport", "sendEvents", "listSites", "listFilterValues",
    } <= ids  # fmt: skip
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    create = schema["paths"]["/api/v1/exports"]["post"]
    assert create["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert schema["paths"]["/api/v1/exports/download/{download_token}"]["get"]["security"] == []
    assert {"Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(
        create["responses"]["429"]["headers"]
    )
    body = schema["components"]["schemas"]["ExportBody"]["properties"]
    assert body["date_from"]["format"] == body["date_to"]["format"] == "date"


def test_generated_client_runs_the_whole_flow(
    site: tuple[live.Server, DemoDB, str, str], client_package: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    server, demo, read_key, write_key = site
    models = _module("models")
    create_export, get_export = _module("api.exports.create_export"), _module("api.exports.get_export")
    download_export, estimate_export = (
        _module("api.exports.download_export"),
        _module("api.exports.estimate_export"),
    )
    list_exports, delete_export = _module("api.exports.list_exports"), _module("api.exports.delete_export")
    stream_export, send_events = _module("api.exports.stream_export"), _module("api.events.send_events")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # The Bearer scheme for exports; the X-API-Key header for events.
        client = client_package.AuthenticatedClient(base_url=server.url, token=read_key)
        writer = client_package.AuthenticatedClient(
            base_url=server.url, token=write_key, prefix="", auth_header_name="X-API-Key"
        )
        body = models.ExportBody(
            export_type=models.ExportBodyExportType.MICROCONVERSIONS,
            date_from=demo.date_from,
            date_to=demo.date_to,
            format_=models.ExportBodyFormat.CSV,
        )
        est = estimate_export.sync(client=client, body=body, site_id="demo")
        assert isinstance(est, models.EstimateOut) and est.will_use_background_job is True

        created = create_export.sync(client=client, body=body, site_id="demo")
        assert isinstance(created, models.CreateOut), created
        job = created.job
        assert job.status == models.JobOutStatus.PENDING and job.date_from == demo.date_from
        deadline = time.monotonic() + 30
        while job.status != models.JobOutStatus.COMPLETED:
            assert job.status not in (models.JobOutStatus.FAILED, models.JobOutStatus.EXPIRED), job
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = get_export.sync(job.job_id, client=client, site_id="demo")
        assert isinstance(job.download_expires_at, datetime.datetime)
        token = job.download_url.rsplit("/", 1)[1]
        got = download_export.sync_detailed(token, client=client_package.Client(base_url=server.url))
        assert got.status_code == 200 and got.content == _expected(demo, "microconversions")
        assert job.actual_rows == est.estimated_rows > SYNC_ROW_LIMIT

        listed = list_exports.sync(client=client, site_id="demo")
        assert isinstance(listed, models.ListOut) and [j.job_id for j in listed.exports] == [job.job_id]

        small = models.ExportBody(
            export_type=models.ExportBodyExportType.DEVICES,
            date_from=demo.date_from,
            date_to=demo.date_to,
            filters=models.ExportBodyFiltersType0.from_dict({"country": "ES"}),
        )
        streamed = stream_export.sync_detailed(client=client, body=small, site_id="demo")
        assert streamed.status_code == 200
        assert streamed.content == _expected(demo, "devices", filters={"country": "ES"})

        gone = delete_export.sync_detailed(job.job_id, client=client, site_id="demo")
        assert gone.status_code == 204
        missing = get_export.sync(job.job_id, client=client, site_id="demo")
        assert isinstance(missing, models.ErrorOut) and missing.error.code == "not_found"

        event = {"type": "pageview", "ts": f"{demo.date_to}T10:00:00Z", "visitor": "gen-1", "path": "/gen"}
        sent = send_events.sync(client=writer, body=[event], site_id="demo")
        assert isinstance(sent, models.EventsOut), sent
        assert (sent.accepted, sent.rejected) == (1, 0)
    modules = list((Path(str(client_package.__file__)).parent / "api").rglob("*.py"))
    say(capsys, f"generated client: {len(modules)} endpoint modules, used without a warning")
