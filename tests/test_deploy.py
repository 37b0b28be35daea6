"""deploy/: the systemd unit (systemd-analyze verify and security), its config, and the reverse
proxy examples (nginx run for real in front of a live server, with a self-signed certificate;
Caddy validated). A missing tool skips its test outside CI and fails it in CI."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from sealexports.api.events import MAX_BODY_BYTES
from sealexports.cli.service import GRACEFUL_SHUTDOWN_SECONDS
from sealexports.config import load_settings
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live
from tests.conftest import DemoDB, say, seed_demo

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "sealexports.service"
BINARY = "/usr/local/bin/sealexports"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) .. 10 (unprotected)


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: scripts/setup-system installs it")
        pytest.skip(f"{name} is not installed")
    return path


class _CaseKeeping(configparser.RawConfigParser):
    """systemd's keys are case-sensitive (configparser lowercases them by default)."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def unit() -> configparser.RawConfigParser:
    parser = _CaseKeeping(strict=False)  # SystemCallFilter= repeats
    parser.read(UNIT)
    return parser


def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's `sealexports` (same arguments):
    `verify` refuses a unit whose binary does not exist, and /usr/local/bin/sealexports is
    only there once installed."""
    entry = Path(sys.executable).with_name("sealexports")
    assert entry.is_file(), entry
    text = UNIT.read_text()
    assert text.count(f"ExecStart={BINARY} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={BINARY} ", f"ExecStart={entry} "))
    return copy


# --- the unit -------------------------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    r = subprocess.run([analyze, "verify", str(runnable_unit(tmp_path))], capture_output=True, text=True)
    # verify exits 0 on unknown keys and misplaced settings, but says so: nothing may be said.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_unit_exposure_is_low(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    analyze = tool("systemd-analyze")
    r = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(runnable_unit(tmp_path))],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
    assert found, r.stdout + r.stderr
    say(capsys, f"systemd-analyze security: exposure {found[1]} (0 = locked down, 10 = unprotected)")
    assert float(found[1]) <= MAX_EXPOSURE


def test_unit_and_its_config_agree() -> None:
    service = unit()["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[0] == BINARY
    config = Path(exec_start[exec_start.index("--config") + 1])
    assert exec_start[-1] == "serve"
    # The config file the unit names is the one in deploy/, in its ConfigurationDirectory.
    assert config == Path("/etc") / service["ConfigurationDirectory"] / "sealexports.toml"
    settings = load_settings(DEPLOY / "sealexports.toml", environ={})
    # Everything the service writes is under its StateDirectory (the rest is read-only).
    state = Path("/var/lib") / service["StateDirectory"]
    assert service["WorkingDirectory"] == str(state)
    for path in (settings.database, settings.queue_path, settings.exports_dir):
        assert path.is_relative_to(state), path
    assert settings.host == "127.0.0.1"  # behind the proxy
    # Stopping: open requests get GRACEFUL_SHUTDOWN_SECONDS, then workers requeue running exports.
    assert int(service["TimeoutStopSec"]) >= GRACEFUL_SHUTDOWN_SECONDS + 30
    assert service["KillSignal"] == "SIGTERM"
    for key, value in {
        "User": "sealexports",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "Restart": "on-failure",
    }.items():
        assert service[key] == value, key


# --- the proxies ----------------------------------------------------------------------------------


def test_proxy_body_limits_match_the_events_limit() -> None:
    assert MAX_BODY_BYTES % 2**20 == 0
    mib = MAX_BODY_BYTES // 2**20
    nginx = re.findall(r"^\s*client_max_body_size (\S+);", (DEPLOY / "nginx.conf").read_text(), re.M)
    assert nginx == [f"{mib}m"]  # nginx's m is MiB
    caddy = re.findall(r"^\s*max_size (\S+)", (DEPLOY / "Caddyfile").read_text(), re.M)
    assert caddy == [f"{mib}MiB"]


def test_caddyfile_is_valid_and_formatted(tmp_path: Path) -> None:
    caddy = tool("caddy")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    caddyfile = str(DEPLOY / "Caddyfile")
    r = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", caddyfile],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0 and "Valid configuration" in r.stdout, r.stdout + r.stderr
    assert "not formatted" not in r.stderr


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _nginx_site(tmp_path: Path, cert: Path, key: Path, upstream: str) -> tuple[Path, int]:
    """deploy/nginx.conf on free loopback ports, with the test's certificate and server."""
    site = (DEPLOY / "nginx.conf").read_text()
    https = live.free_port()
    for old, new in {
        "listen 80;": f"listen 127.0.0.1:{live.free_port()};",
        "listen [::]:80;": "",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "listen [::]:443 ssl http2;": "",
        "/etc/letsencrypt/live/exports.example.com/fullchain.pem": str(cert),
        "/etc/letsencrypt/live/exports.example.com/privkey.pem": str(key),
        "proxy_pass http://127.0.0.1:8000;": f"proxy_pass {upstream};",
    }.items():
        assert site.count(old) == 1, old
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    main = tmp_path / "nginx-main.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # the workers must reach the test's files
        + f"daemon off;\nworker_processes 1;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        + "events {}\nhttp {\n    access_log off;\n"
        + "".join(f"    {kind}_temp_path {temp}/{kind};\n" for kind in TEMP_PATHS)
        + f"    include {tmp_path}/site.conf;\n}}\n"
    )  # fmt: skip
    return main, https


@dataclass
class Upstream:
    """A live server on a small seeded database, and a read key for it."""

    server: live.Server
    db: DemoDB
    key: str
    write_key: str


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    db = seed_demo(tmp_path / "db.sqlite", visits=300, days=5)
    conn = connect(db.path)
    key, write_key = create_key(conn, db.site.site_id), create_key(conn, db.site.site_id, scope="write")
    conn.close()
    with live.running(db.path, tmp_path, env={"SEALEXPORTS_PUBLIC_URL": ""}) as server:
        yield Upstream(server, db, key, write_key)


def _check_through(base: str, cert: Path, up: Upstream) -> requests.Response:
    """An export created through the proxy: its link is the proxy's https address and downloads
    the same bytes as the service itself; a body over the events limit gets a 413."""
    r = requests.post(
        f"{base}/api/v1/exports",
        params={"site_id": up.db.site.site_id},
        json={"export_type": "sources", "date_from": str(up.db.date_from), "date_to": str(up.db.date_to)},
        headers={"X-API-Key": up.key},
        verify=str(cert),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    link = r.json()["job"]["download_url"]
    # public_url unset: the link is where the client went, through the proxy, over TLS.
    assert link.startswith(f"{base}/api/v1/exports/download/"), link
    through = requests.get(link, verify=str(cert), timeout=30)
    direct = requests.get(link.replace(base, up.server.url), timeout=30)
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content and through.content.startswith(b"utm_source,")
    return r


def _too_big(base: str, cert: Path, up: Upstream) -> requests.Response:
    headers = {"X-API-Key": up.write_key, "Content-Type": "application/x-ndjson"}
    r = requests.post(
        f"{base}/api/v1/events",
        params={"site_id": up.db.site.site_id},
        data=b"x" * (MAX_BODY_BYTES + 1),
        headers=headers,
        verify=str(cert),
        timeout=30,
    )
    assert r.status_code == 413, r.text
    return r


def test_nginx_example_serves_working_https_links(tmp_path: Path, upstream: Upstream) -> None:
    nginx = tool("nginx")
    cert, key = _certificate(tmp_path)
    main, port = _nginx_site(tmp_path, cert, key, upstream.server.url)
    test = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(main)], stderr=subprocess.PIPE)
    try:
        base = f"https://localhost:{port}"
        _wait_for(f"{base}/healthz", cert, proxy)
        created = _check_through(base, cert, upstream)
        assert re.fullmatch("[0-9a-f]{32}", created.headers["X-Request-ID"])  # nginx's $request_id
        # nginx refuses it from its Content-Length, before the service sees a byte.
        assert _too_big(base, cert, upstream).headers["Server"].startswith("nginx")
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_caddy_example_serves_working_https_links(tmp_path: Path, upstream: Upstream) -> None:
    caddy = tool("caddy")
    cert, key = _certificate(tmp_path)
    port, http = live.free_port(), live.free_port()
    text = (DEPLOY / "Caddyfile").read_text()
    for old, new in {
        # No admin endpoint, no :80 redirect server, the test's certificate and server.
        "{\n\tservers {": f"{{\n\tadmin off\n\tauto_https disable_redirects\n\thttp_port {http}\n\tservers {{",  # noqa: E501
        "exports.example.com {": f"https://localhost:{port} {{\n\ttls {cert} {key}",
        "reverse_proxy 127.0.0.1:8000 {": f"reverse_proxy {upstream.server.url.removeprefix('http://')} {{",
    }.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(text)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    run = [caddy, "run", "--adapter", "caddyfile", "--config", str(caddyfile)]
    proxy = subprocess.Popen(run, stderr=subprocess.PIPE, env=env)
    try:
        base = f"https://localhost:{port}"
        _wait_for(f"{base}/healthz", cert, proxy)
        _check_through(base, cert, upstream)
        # Caddy cuts the body at max_size as the service reads it (the service stops there too).
        _too_big(base, cert, upstream)
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def _wait_for(url: str, cert: Path, proxy: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if requests.get(url, verify=str(cert), timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if proxy.poll() is not None or time.monotonic() > deadline:
            proxy.kill()
            raise RuntimeError(
                "nginx did not start: " + (proxy.stderr.read() if proxy.stderr else b"").decode()
            )
        time.sleep(0.1)


# --- MemoryDenyWriteExecute ---------------------------------------------------------------------

# The kernel's own write-xor-execute rule for a process and its children (Linux 6.3+), the rule
# the unit's MemoryDenyWriteExecute=yes asks for; checked to hold before exec'ing the command.
MDWE = """
import ctypes, mmap, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)
except PermissionError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""
EVENTS = [
    {"type": "pageview", "ts": "2025-03-30T10:00:00+02:00", "visitor": "v1", "path": "/",
     "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                   "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"},
    {"type": "pageview", "ts": "2025-03-30T11:00:00+02:00", "visitor": "v2", "path": "/pricing",
     "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/124.0.0.0 Safari/537.36"},
]  # fmt: skip


def test_the_service_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    import json

    wrapper = tmp_path / "mdwe.py"
    wrapper.write_text(MDWE)
    (tmp_path / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    base = [
        sys.executable,
        str(wrapper),
        sys.executable,
        "-m",
        "sealexports",
        "--db",
        str(tmp_path / "db.sqlite"),
    ]
    env = {**os.environ, "SEALEXPORTS_EXPORTS_DIR": str(tmp_path / "exports")}

    def run(*args: str) -> str:
        r = subprocess.run([*base, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
        if r.returncode == 77:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
        assert r.returncode == 0, r.stderr
        return r.stdout

    run("init")
    run("sites", "create", "shop", "--timezone", "Europe/Madrid")
    run("import", "events.ndjson", "--site", "shop", "--silent")  # ua-parser's compiled resolver
    day = ("--from", "2025-03-30", "--to", "2025-03-30")
    browsers = run("export", "--site", "shop", "--type", "browsers", *day, "-o", "-", "--silent")
    assert sorted(line.split(",")[0] for line in browsers.splitlines()[1:]) == ["Chrome", "Safari"]
    key = run("keys", "create", "--site", "shop").strip()
    port = live.free_port()
    server = subprocess.Popen([*base, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        assert live.wait_healthy(url, server, seconds=30), "serve did not start"
        r = requests.post(
            f"{url}/api/v1/exports",
            params={"site_id": "shop"},
            json={"export_type": "pages", "date_from": "2025-03-30", "date_to": "2025-03-30"},
            headers={"X-API-Key": key},
            timeout=30,
        )
        assert r.status_code == 201 and r.json()["job"]["status"] == "completed", r.text
        assert requests.get(r.json()["job"]["download_url"], timeout=30).status_code == 200
    finally:
        server.terminate()
        assert server.wait(timeout=30) in (0, -15), (server.stderr.read() if server.stderr else b"").decode()
