"""The spec's own client examples (Python requests, JavaScript fetch) against a live uvicorn."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live, spec_client
from tests.conftest import DemoDB, seed_demo

SYNC_ROW_LIMIT = 300
HERE = Path(__file__).parent


@dataclass
class LiveServer:
    base_url: str
    key: str
    demo: DemoDB
    server: live.Server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("live")
    demo = seed_demo(root / "live.db", visits=3000, days=10)
    conn = connect(demo.path)
    key = create_key(conn, "demo")
    conn.close()
    with live.running(demo.path, root, env={"SEALEXPORTS_SYNC_ROW_LIMIT": str(SYNC_ROW_LIMIT)}) as server:
        yield LiveServer(server.api, key, demo, server)
        # A clean shutdown on SIGTERM (uvicorn then re-raises the signal to exit with it).
        assert server.stop() in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log.read_text()


def _expected(demo: DemoDB, export_type: str, filters: dict[str, str] | None = None) -> bytes:
    conn = connect(demo.path)
    req = build_request("demo", export_type, "csv", str(demo.date_from), str(demo.date_to), filters)
    try:
        return b"".join(engine.chunks(conn, req))
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("export_type", "filters", "background"),
    [("sources", {"country": "ES"}, False), ("microconversions", None, True)],
)
def test_python_example_exports_and_downloads(
    live_server: LiveServer,
    tmp_path: Path,
    export_type: str,
    filters: dict[str, str] | None,
    background: bool,
) -> None:
    spec_client.BASE_URL = live_server.base_url
    spec_client.API_KEY = live_server.key
    # The example's own first call decides sync or background; check the size puts us on the path.
    est = requests.post(
        f"{live_server.base_url}/exports/estimate",
        headers={"X-API-Key": live_server.key},
        params={"site_id": "demo"},
        json={
            "export_type": export_type,
            "date_from": str(live_server.demo.date_from),
            "date_to": str(live_server.demo.date_to),
            "filters": filters or {},
        },
        timeout=10,
    ).json()
    assert est["will_use_background_job"] is background

    url = spec_client.export_data(
        site_id="demo",
        export_type=export_type,
        date_from=str(live_server.demo.date_from),
        date_to=str(live_server.demo.date_to),
        filters=filters,
    )
    out = tmp_path / "export.csv"
    spec_client.download_file(url, out)
    assert out.read_bytes() == _expected(live_server.demo, export_type, filters)


def test_javascript_example_streams_a_small_export(live_server: LiveServer) -> None:
    result = _node(live_server, "sources")
    assert result.returncode == 0, result.stderr
    assert result.stdout == _expected(live_server.demo, "sources")


def test_javascript_example_gets_413_for_a_large_export(live_server: LiveServer) -> None:
    result = _node(live_server, "microconversions")
    assert result.returncode == 3
    assert b"Export too large for streaming. Use background job." in result.stderr


def _node(live_server: LiveServer, export_type: str) -> subprocess.CompletedProcess[bytes]:
    node = shutil.which("node")
    assert node, "node is needed to run the spec's JavaScript example"
    return subprocess.run(
        [
            node,
            str(HERE / "spec_client.mjs"),
            "demo",
            export_type,
            str(live_server.demo.date_from),
            str(live_server.demo.date_to),
        ],
        env={**os.environ, "BASE_URL": live_server.base_url, "API_KEY": live_server.key},
        capture_output=True,
        timeout=60,
    )
