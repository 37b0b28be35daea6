"""CORS: `cors_origins` lets pages on other origins call the API; the spec's JavaScript example
runs from a page in headless Chromium against a live server on another origin."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from sealexports.api.app import create_app
from sealexports.config import Settings, load_settings
from sealexports.errors import ConfigError
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import browser, live
from tests.conftest import DemoDB, seed_demo

HERE = Path(__file__).parent
PAGE_ORIGIN = "http://127.0.0.1:{port}"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key,content-type",
}


# --- Settings ------------------------------------------------------------------------------------


def test_cors_origins_from_file_and_environment(tmp_path: Path) -> None:
    assert load_settings(environ={}).cors_origins == ()
    config = tmp_path / "c.toml"
    config.write_text('cors_origins = ["https://app.example.com", "http://localhost:5173"]\n')
    assert load_settings(config, environ={}).cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
    )
    env = {"SEALEXPORTS_CORS_ORIGINS": "https://a.example, https://b.example:8443"}
    assert load_settings(environ=env).cors_origins == ("https://a.example", "https://b.example:8443")


@pytest.mark.parametrize(
    "bad", ['"https://a.example"', '["https://a.example/"]', '["a.example"]', '["ftp://x"]']
)
def test_bad_cors_origins_are_refused_by_name(tmp_path: Path, bad: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"cors_origins = {bad}\n")
    with pytest.raises(ConfigError, match="'cors_origins'"):
        load_settings(config, environ={})


# --- Preflight and headers (in process) ----------------------------------------------------------


@contextmanager
def _client(tmp_path: Path, origins: tuple[str, ...]) -> Iterator[TestClient[Any]]:
    settings = Settings(
        database=tmp_path / "db.sqlite", exports_dir=tmp_path / "exports", cors_origins=origins
    )
    with TestClient(create_app(settings, run_workers=False)) as client:
        yield client


def test_preflight_allows_the_configured_origin_only(tmp_path: Path) -> None:
    allowed = "https://dash.example.com"
    with _client(tmp_path, (allowed,)) as client:
        r = client.options("/api/v1/exports/stream", headers={"Origin": allowed, **PREFLIGHT})
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == allowed
        assert {"x-api-key", "content-type"} <= set(
            r.headers["access-control-allow-headers"].lower().split(", ")
        )
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in r.headers
        # Answers (errors too) say which headers a page may read.
        r = client.post("/api/v1/exports/stream?site_id=x", headers={"Origin": allowed}, json={})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == allowed
        exposed = set(r.headers["access-control-expose-headers"].split(", "))
        assert {"Content-Disposition", "X-Request-ID", "Retry-After", "X-RateLimit-Remaining"} <= exposed
        other = client.options(
            "/api/v1/exports/stream", headers={"Origin": "https://evil.example", **PREFLIGHT}
        )
        assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_by_default(tmp_path: Path) -> None:
    """The old behaviour, kept as the default: no origin is allowed."""
    with _client(tmp_path, ()) as client:
        r = client.options(
            "/api/v1/exports/stream", headers={"Origin": "https://dash.example.com", **PREFLIGHT}
        )
        assert "access-control-allow-origin" not in r.headers


# --- The spec's streamExport from a page on another origin ---------------------------------------


def _stream_export_source() -> str:
    """The spec's `streamExport`, as tests/spec_client.mjs holds it (verbatim from the page)."""
    text = (HERE / "spec_client.mjs").read_text()
    start = text.index("async function streamExport")
    return text[start : text.index("const [site, type, from, to]")]


class _Page(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _page_server(port: int, html: str) -> Iterator[None]:
    """A page at http://127.0.0.1:port/ (an origin other than the API's port)."""
    handler = type("Page", (_Page,), {"body": html.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoDB, str]:
    db = seed_demo(tmp_path_factory.mktemp("cors") / "cors.db", visits=1500, days=7)
    conn = connect(db.path)
    key = create_key(conn, "demo")
    conn.close()
    return db, key


@pytest.mark.parametrize("allowed", [True, False], ids=["origin-allowed", "no-cors"])
def test_spec_stream_export_runs_from_a_page_on_another_origin(
    tmp_path: Path, demo: tuple[DemoDB, str], allowed: bool
) -> None:
    browser.require_chromium()
    db, key = demo
    page_port = live.free_port()
    page_origin = PAGE_ORIGIN.format(port=page_port)
    env = {"SEALEXPORTS_CORS_ORIGINS": page_origin if allowed else "", "SEALEXPORTS_SYNC_ROW_LIMIT": "300"}
    with live.running(db.path, tmp_path, env=env) as server:
        html = "<!doctype html><title>dashboard</title><p>a page on another origin</p>"
        with _page_server(page_port, html), browser.chromium() as driver:
            driver.get(page_origin + "/")
            driver.set_script_timeout(30)
            small = driver.execute_async_script(_script(server.api, key, "sources", db))
            large = driver.execute_async_script(_script(server.api, key, "microconversions", db))
    if allowed:
        conn = connect(db.path)
        req = build_request("demo", "sources", "csv", str(db.date_from), str(db.date_to))
        expected = b"".join(engine.chunks(conn, req)).decode()
        conn.close()
        assert small == expected
        # The 413 is readable from the page, so the example's own error is the one thrown.
        assert large == "ERROR: Export too large for streaming. Use background job."
    else:
        # The browser refuses to hand the answer to the page: fetch fails outright.
        assert small == large == "ERROR: Failed to fetch"


def _script(api: str, key: str, export_type: str, db: DemoDB) -> str:
    return f"""
        const done = arguments[arguments.length - 1];
        const BASE_URL = {json.dumps(api)};
        const API_KEY = {json.dumps(key)};
        {_stream_export_source()}
        streamExport("demo", {json.dumps(export_type)}, "{db.date_from}", "{db.date_to}")
            .then((blob) => blob.text()).then(done, (e) => done("ERROR: " + e.message));
    """
