"""The spec's own client examples (Python requests, JavaScript fetch) against a live uvicorn."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import spec_client
from tests.conftest import DemoDB, seed_demo

SYNC_ROW_LIMIT = 300
HERE = Path(__file__).parent


@dataclass
class LiveServer:
    base_url: str
    key: str
    demo: DemoDB
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("live")
    demo = seed_demo(root / "live.db", visits=3000, days=10)
    conn = connect(demo.path)
    key = create_key(conn, "demo")
    conn.close()
    port = _free_port()
    env = {
        **os.environ,
        "SEALEXPORTS_EXPORTS_DIR": str(root / "exports"),
        "SEALEXPORTS_SYNC_ROW_LIMIT": str(SYNC_ROW_LIMIT),
        "SEALEXPORTS_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sealexports", "--db", str(demo.path), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "wb"),  # noqa: SIM115
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("server did not start: " + (root / "server.log").read_text())
        time.sleep(0.1)
    yield LiveServer(f"{base}/api/v1", key, demo, process)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to exit with it.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    log = (root / "server.log").read_text()
    assert "Application shutdown complete" in log, log


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
    live: LiveServer, tmp_path: Path, export_type: str, filters: dict[str, str] | None, background: bool
) -> None:
    spec_client.BASE_URL = live.base_url
    spec_client.API_KEY = live.key
    # The example's own first call decides sync or background; check the size puts us on the path.
    est = requests.post(
        f"{live.base_url}/exports/estimate",
        headers={"X-API-Key": live.key},
        params={"site_id": "demo"},
        json={"export_type": export_type, "date_from": str(live.demo.date_from), "date_to": str(live.demo.date_to), "filters": filters or {}},
        timeout=10,
    ).json()
    assert est["will_use_background_job"] is background

    url = spec_client.export_data(
        site_id="demo",
        export_type=export_type,
        date_from=str(live.demo.date_from),
        date_to=str(live.demo.date_to),
        filters=filters,
    )
    out = tmp_path / "export.csv"
    spec_client.download_file(url, out)
    assert out.read_bytes() == _expected(live.demo, export_type, filters)


def test_javascript_example_streams_a_small_export(live: LiveServer) -> None:
    result = _node(live, "sources")
    assert result.returncode == 0, result.stderr
    assert result.stdout == _expected(live.demo, "sources")


def test_javascript_example_gets_413_for_a_large_export(live: LiveServer) -> None:
    result = _node(live, "microconversions")
    assert result.returncode == 3
    assert b"Export too large for streaming. Use background job." in result.stderr


def _node(live: LiveServer, export_type: str) -> subprocess.CompletedProcess[bytes]:
    node = shutil.which("node")
    assert node, "node is needed to run the spec's JavaScript example"
    return subprocess.run(
        [node, str(HERE / "spec_client.mjs"), "demo", export_type, str(live.demo.date_from), str(live.demo.date_to)],
        env={**os.environ, "BASE_URL": live.base_url, "API_KEY": live.key},
        capture_output=True,
        timeout=60,
    )
