"""Download links without public_url: from the request's Host, from a trusted proxy's forwarded
headers (and never an untrusted peer's), and under a path prefix (root_path), over real HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from litestar.types import Message, Receive, ReceiveMessage, Scope, Send

from sealexports.api.app import create_app
from sealexports.api.proxy import ProxyHeaders, link_warnings
from sealexports.cli.service import _local_url
from sealexports.config import Settings
from sealexports.errors import ConfigError
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live
from tests.apps import API, ApiFactory, Template
from tests.conftest import seed_demo

TOKEN = r"[A-Za-z0-9_.\-]+"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    db = seed_demo(tmp_path_factory.mktemp("proxy") / "template.db", visits=400, days=7)
    return Template(db.path, db.site.site_id, str(db.date_from), str(db.date_to))


# --- links from the request (Litestar test client: the peer is not an IP, so never trusted) ------


def test_links_follow_the_host_header_when_public_url_is_unset(make: ApiFactory, template: Template) -> None:
    api = make(template, public_url="")
    job = api.created(api.body(), headers={**api.headers, "Host": "stats.example.org:8443"})["job"]
    assert job["status"] == "completed"
    assert re.fullmatch(rf"http://stats\.example\.org:8443{API}/download/{TOKEN}", job["download_url"])
    # Forwarded headers from a peer that is not a trusted proxy change nothing.
    spoofed = {**api.headers, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    job = api.created(api.body(), headers=spoofed)["job"]
    assert job["download_url"].startswith(f"http://testserver.local{API}/download/")


def test_a_background_job_link_comes_from_the_request_that_reads_it(
    make: ApiFactory, template: Template
) -> None:
    api = make(template, public_url="", sync_row_limit=1)
    job = api.created(api.body())["job"]
    assert job["status"] == "pending"
    done, _ = api.wait(job["job_id"])
    assert done["status"] == "completed"
    for host in ("a.example", "b.example:9000"):
        got = api.get_job(job["job_id"], headers={**api.headers, "Host": host}).json()
        assert got["download_url"].startswith(f"http://{host}{API}/download/")
        listed = api.list(headers={**api.headers, "Host": host}).json()["exports"]
        assert [e["download_url"] for e in listed] == [got["download_url"]]


def test_public_url_when_set_wins_over_the_request(make: ApiFactory, template: Template) -> None:
    api = make(template, public_url="https://exports.example.com/sub")
    job = api.created(api.body(), headers={**api.headers, "Host": "other.example"})["job"]
    assert job["download_url"].startswith(f"https://exports.example.com/sub{API}/download/")


# --- a live server behind a (simulated) proxy: the peer is 127.0.0.1 -----------------------------


def _key(db: Path, site_id: str) -> str:
    conn = connect(db)
    try:
        return create_key(conn, site_id)
    finally:
        conn.close()


@pytest.fixture
def served(tmp_path: Path, template: Template) -> Iterator[Any]:
    """Start `sealexports serve` on a copy of the template with extra environment."""
    servers: list[live.Server] = []

    def start(**env: str) -> tuple[live.Server, dict[str, Any]]:
        work = tmp_path / f"s{len(servers)}"
        work.mkdir()
        db = work / "db.sqlite"
        db.write_bytes(template.path.read_bytes())
        key = _key(db, template.site_id)
        server = live.start(db, work, env={"SEALEXPORTS_PUBLIC_URL": "", **env})
        servers.append(server)
        call = {
            "params": {"site_id": template.site_id},
            "json": {"export_type": "sources", "date_from": template.date_from, "date_to": template.date_to},
            "headers": {"X-API-Key": key},
        }
        return server, call

    yield start
    for server in servers:
        server.stop()


def _create(url: str, call: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = requests.post(url, **{**call, "headers": {**call["headers"], **headers}}, timeout=30)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()["job"]
    assert job["status"] == "completed"
    return job


def test_forwarded_headers_from_a_trusted_proxy_are_honoured(served: Any) -> None:
    server, call = served()  # default trusted_proxies: loopback
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "stats.example.org"}
    job = _create(f"{server.api}/exports", call, **forwarded, **{"X-Forwarded-For": "203.0.113.9"})
    assert re.fullmatch(rf"https://stats\.example\.org{API}/download/{TOKEN}", job["download_url"])
    # The client in the access log is the one the proxy saw (the line follows the response).
    deadline = time.monotonic() + 10
    while '203.0.113.9 "POST /api/v1/exports"' not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.05)
    # RFC 7239 Forwarded, as some proxies send it.
    job = _create(
        f"{server.api}/exports", call, Forwarded='for=203.0.113.9;proto=https;host="x.example:8443"'
    )
    assert job["download_url"].startswith(f"https://x.example:8443{API}/download/")
    # A Host that is not a host name is ignored, not echoed into links.
    job = _create(f"{server.api}/exports", call, **{"X-Forwarded-Host": "evil.example/path?"})
    assert job["download_url"].startswith(f"{server.url}{API}/download/")
    # The link works where it says (the proxy would send its path on unchanged).
    path = job["download_url"].removeprefix(server.url)
    assert requests.get(server.url + path, timeout=30).status_code == 200


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(served: Any) -> None:
    # Bound on all interfaces, trusting only a network the test client is not in.
    server, call = served(SEALEXPORTS_TRUSTED_PROXIES="10.0.0.0/8", SEALEXPORTS_HOST="0.0.0.0")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    job = _create(f"{server.api}/exports", call, **forwarded)
    assert job["download_url"].startswith(f"{server.url}{API}/download/")
    job = _create(f"{server.api}/exports", call, Forwarded="proto=https;host=evil.example")
    assert job["download_url"].startswith(f"{server.url}{API}/download/")
    assert "public_url is unset and serve listens on all interfaces" in server.log.read_text()


def test_root_path_works_whether_the_proxy_strips_the_prefix_or_keeps_it(served: Any) -> None:
    server, call = served(SEALEXPORTS_ROOT_PATH="/exports")
    kept = _create(f"{server.url}/exports/api/v1/exports", call)
    stripped = _create(f"{server.api}/exports", call)
    for job in (kept, stripped):
        assert job["download_url"].startswith(f"{server.url}/exports{API}/download/")
        token = job["download_url"].rsplit("/", 1)[1]
        for path in (f"/exports{API}/download/{token}", f"{API}/download/{token}"):
            assert requests.get(server.url + path, timeout=30).status_code == 200
    # Behind a trusted proxy, with the prefix: the public address and the prefix together.
    job = _create(
        f"{server.api}/exports", call, **{"X-Forwarded-Host": "a.example", "X-Forwarded-Proto": "https"}
    )
    assert job["download_url"].startswith(f"https://a.example/exports{API}/download/")
    # The docs: the page's assets are under the prefix, and the schema's server is the prefix.
    page = requests.get(f"{server.url}/exports/schema", timeout=30)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)=["\']([^"\']+/assets/[^"\']+)', page.text)
    assert len(assets) >= 3, page.text[:2000]
    for asset in assets:
        assert asset.startswith("/exports/schema/assets/"), asset
        assert requests.get(server.url + asset, timeout=30).status_code == 200, asset
    schema = requests.get(f"{server.url}/exports/schema/openapi.json", timeout=30).json()
    assert schema["servers"] == [{"url": "/exports"}]
    assert f"{API}/{{job_id}}" in schema["paths"]
    assert requests.get(f"{server.url}/exports/healthz", timeout=30).status_code == 200


def test_a_root_path_that_starts_one_of_our_routes_is_refused(tmp_path: Path) -> None:
    for prefix in ("/api", "/api/v1", "/schema", "/healthz"):
        settings = Settings(database=tmp_path / "db.sqlite", exports_dir=tmp_path / "x", root_path=prefix)
        with pytest.raises(ConfigError, match="root_path"):
            create_app(settings)


# --- the ASGI wrapper alone: header forms ------------------------------------------------------


async def _scope_after(headers: dict[str, str], peer: str = "127.0.0.1", **kw: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope)

    async def receive() -> ReceiveMessage:
        raise AssertionError("the wrapper reads no body")

    async def send(message: Message) -> None:
        raise AssertionError("the wrapper sends nothing itself")

    # A minimal HTTP scope: the keys the wrapper reads, not all those Litestar's type lists.
    scope = {
        "type": "http",
        "scheme": "http",
        "path": kw.get("path", "/api/v1/exports"),
        "raw_path": kw.get("path", "/api/v1/exports").encode(),
        "client": (peer, 5000),
        "headers": [(b"host", b"127.0.0.1:8000")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    wrapper = ProxyHeaders(app, kw.get("trusted", ["127.0.0.1", "::1"]), kw.get("root_path", ""))
    await wrapper(cast("Scope", scope), receive, send)
    return seen


def _host(scope: dict[str, Any]) -> str:
    values: list[str] = [v.decode() for k, v in scope["headers"] if k == b"host"]
    assert len(values) == 1
    return values[0]


@pytest.mark.parametrize(
    ("headers", "scheme", "host", "client"),
    [
        ({}, "http", "127.0.0.1:8000", "127.0.0.1"),
        ({"X-Forwarded-Proto": "https"}, "https", "127.0.0.1:8000", "127.0.0.1"),
        ({"X-Forwarded-Proto": "javascript"}, "http", "127.0.0.1:8000", "127.0.0.1"),
        ({"X-Forwarded-Proto": "http, https"}, "https", "127.0.0.1:8000", "127.0.0.1"),  # nearest wins
        ({"X-Forwarded-Host": "a.example:8443"}, "http", "a.example:8443", "127.0.0.1"),
        ({"X-Forwarded-Host": "[2001:db8::1]:443"}, "http", "[2001:db8::1]:443", "127.0.0.1"),
        ({"X-Forwarded-Host": "a.example@evil"}, "http", "127.0.0.1:8000", "127.0.0.1"),
        ({"X-Forwarded-For": "198.51.100.4, 127.0.0.1"}, "http", "127.0.0.1:8000", "198.51.100.4"),
        ({"X-Forwarded-For": "10.9.9.9, 198.51.100.4"}, "http", "127.0.0.1:8000", "198.51.100.4"),
        (
            {"Forwarded": 'for="[2001:db8::5]:99";proto=https;host=b.example'},
            "https",
            "b.example",
            "2001:db8::5",
        ),
        (
            {"Forwarded": "for=192.0.2.60;proto=http, for=127.0.0.1;proto=https"},
            "https",
            "127.0.0.1:8000",
            "192.0.2.60",
        ),
        (
            {"Forwarded": "proto=https;garbage", "X-Forwarded-Proto": "https"},
            "http",
            "127.0.0.1:8000",
            "127.0.0.1",
        ),
    ],
)
async def test_forwarded_header_forms_from_a_trusted_peer(
    headers: dict[str, str], scheme: str, host: str, client: str
) -> None:
    scope = await _scope_after(headers)
    assert (scope["scheme"], _host(scope), scope["client"][0]) == (scheme, host, client)


async def test_trusted_proxies_take_networks_and_ipv6() -> None:
    headers = {"X-Forwarded-Proto": "https"}
    assert (await _scope_after(headers, "10.3.4.5", trusted=["10.0.0.0/8"]))["scheme"] == "https"
    assert (await _scope_after(headers, "::1"))["scheme"] == "https"
    assert (await _scope_after(headers, "10.3.4.5"))["scheme"] == "http"
    assert (await _scope_after(headers, "127.0.0.1", trusted=[]))["scheme"] == "http"


async def test_root_path_is_put_back_on_a_stripped_path_only() -> None:
    stripped = await _scope_after({}, root_path="/exports")
    kept = await _scope_after({}, root_path="/exports", path="/exports/api/v1/exports")
    assert stripped["root_path"] == kept["root_path"] == "/exports"
    assert stripped["path"] == kept["path"] == "/exports/api/v1/exports"
    assert stripped["raw_path"] == kept["raw_path"] == b"/exports/api/v1/exports"


# --- start-up warnings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), []),
        (Settings(public_url="https://x.example", host="0.0.0.0"), []),
        (Settings(host="0.0.0.0"), ["listens on all interfaces"]),
        (Settings(host="::"), ["listens on all interfaces"]),
        (Settings(public_url="http://127.0.0.1:8000", host="0.0.0.0"), ["is a loopback address"]),
        (Settings(public_url="http://localhost", host="192.0.2.10"), ["is a loopback address"]),
        (Settings(public_url="https://x.example", root_path="/exports"), ["does not end with it"]),
        (Settings(public_url="https://x.example/exports", root_path="/exports"), []),
        (Settings(trusted_proxies=()), ["no trusted_proxies"]),
    ],
)
def test_link_warnings(settings: Settings, expected: list[str]) -> None:
    warnings = link_warnings(settings)
    assert len(warnings) == len(expected), warnings
    for warning, fragment in zip(warnings, expected, strict=True):
        assert fragment in warning


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), "http://127.0.0.1:8000"),
        (Settings(host="0.0.0.0", port=9000), "http://127.0.0.1:9000"),  # not http://0.0.0.0:9000
        (Settings(host="::"), "http://[::1]:8000"),
        (Settings(host="fd00::7"), "http://[fd00::7]:8000"),
        (Settings(root_path="/exports"), "http://127.0.0.1:8000/exports"),
        (Settings(public_url="https://x.example/exports", root_path="/exports"), "https://x.example/exports"),
    ],
)
def test_the_demo_banner_points_where_this_machine_reaches_the_service(
    settings: Settings, expected: str
) -> None:
    assert _local_url(settings) == expected
