"""The one-file executable (scripts/build-binary) run as an operator would: copied to an empty
folder, with an empty environment (PATH only), outside any virtualenv. Its outputs are checked
against the installed package's, run on the same files."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from sealexports import __version__
from sealexports.ingest.useragent import parse_user_agent
from tests import live
from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
BARE_ENV = {"PATH": "/usr/bin:/bin"}  # as `env -i PATH=/usr/bin:/bin`

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

AGENTS = {
    "ios": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "win": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "linux": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
}


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build (or reuse) dist/sealexports, and copy it away from the source tree."""
    subprocess.run([str(ROOT / "scripts" / "build-binary")], cwd=ROOT, check=True, timeout=1100)
    contents = subprocess.run(
        [str(Path(sys.executable).with_name("pyi-archive_viewer")), "-l", "-r", "-b",
         str(ROOT / "dist" / "sealexports")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # What is found at run time by name, not by import: it must be inside, not on the host.
    for part in (
        "ua_parser_rs/ua_parser_rs.abi3.so", "tzdata/zoneinfo/Europe/Madrid", "ua_parser_builtins",
        "pycountry/databases/iso3166-1.json",
    ):  # fmt: skip
        assert part in contents, part
    # Every data file of the package (the web page, the API docs' assets, ...).
    package = ROOT / "sealexports"
    data = [p for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data
    for path in data:
        assert f" {path.relative_to(ROOT)}\n" in contents, path
    target = tmp_path_factory.mktemp("bin") / "sealexports"
    shutil.copy2(ROOT / "dist" / "sealexports", target)
    return target


def run(binary: Path, args: Sequence[str], cwd: Path) -> str:
    done = subprocess.run(
        [str(binary), *args], cwd=cwd, env=BARE_ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def package_export(db: Path, args: Sequence[str]) -> bytes:
    """The same export by the installed package (this test's Python), to stdout."""
    return subprocess.run(
        [sys.executable, "-m", "sealexports", "--db", str(db), "export", *args, "-o", "-", "--silent"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip


def test_binary_runs_the_commands_with_an_empty_environment(binary: Path, tmp_path: Path) -> None:
    assert run(binary, ["--version"], tmp_path).strip() == f"sealexports, version {__version__}"
    run(binary, ["init"], tmp_path)
    assert (tmp_path / "sealexports.db").exists()  # the default path, in the working folder
    run(binary, ["seed", "--visits", "2000", "--days", "10", "--end", "2025-03-31", "--silent"], tmp_path)

    # Three visitors on the Madrid DST day (tzdata), each with a user agent (ua-parser's rules).
    run(binary, ["sites", "create", "shop", "--timezone", "Europe/Madrid"], tmp_path)
    lines = [
        {"type": "pageview", "ts": f"2025-03-30T0{i}:30:00+00:00", "visitor": name, "path": "/",
         "user_agent": ua}
        for i, (name, ua) in enumerate(AGENTS.items())
    ]  # fmt: skip
    lines.append({"type": "pageview", "ts": "2025-03-30T00:40:00Z", "visitor": "ios", "path": "/pricing"})
    lines[0]["country"] = "kh"  # pycountry's tables: the code checked, and its name
    (tmp_path / "events.ndjson").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run(binary, ["import", "events.ndjson", "--site", "shop", "--silent"], tmp_path)

    span = ["--from", "2025-03-30", "--to", "2025-03-30"]
    for column, index in (("browsers", 1), ("devices", 0), ("os", 2)):
        out = run(binary, ["export", "--site", "shop", "--type", column, *span, "--format", "json",
                           "-o", f"{column}.json", "--silent"], tmp_path)  # fmt: skip
        assert out == ""
        rows = json.loads((tmp_path / f"{column}.json").read_text())
        got = {row[{"browsers": "browser", "devices": "device_type", "os": "os"}[column]]: row["entrances"]
               for row in rows}  # fmt: skip
        expected: dict[str | None, int] = {}
        for ua in AGENTS.values():
            value = parse_user_agent(ua)[index]
            expected[value] = expected.get(value, 0) + 1
        assert got == expected, column
    assert set(json.loads((tmp_path / "browsers.json").read_text())[0]) >= {"browser", "page_views"}
    countries = run(binary, ["export", "--site", "shop", "--type", "countries", *span, "-o", "-"], tmp_path)
    assert "\nKH,Cambodia,1," in countries, countries

    args = ["--site", "demo", "--type", "sources", "--from", "2025-03-22", "--to", "2025-03-31"]
    run(binary, ["export", *args, "-o", "sources.csv", "--silent"], tmp_path)
    assert (tmp_path / "sources.csv").read_bytes() == package_export(tmp_path / "sealexports.db", args)


def test_binary_serves_a_background_export_and_stops_on_sigterm(binary: Path, tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    run(binary, ["seed", "--visits", "2000", "--days", "10", "--end", str(today), "--silent"], tmp_path)
    (tmp_path / "sealexports.toml").write_text('sync_row_limit = 5\nexports_dir = "out"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        server = subprocess.Popen(
            [str(binary), "--config", "sealexports.toml", "serve", "--demo", "--port", str(port)],
            cwd=tmp_path, env=BARE_ENV, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        assert live.wait_healthy(url, server, seconds=120), log.read_text()
        found = re.search(r"API key: (sm_\S+)", log.read_text())
        assert found, log.read_text()
        headers = {"X-API-Key": found[1]}

        start = today - timedelta(days=9)
        body = {"export_type": "sources", "date_from": str(start), "date_to": str(today)}
        r = requests.post(f"{url}/api/v1/exports", params={"site_id": "demo"}, json=body, headers=headers,
                          timeout=30)  # fmt: skip
        assert r.status_code in (200, 201, 202), r.text
        job = r.json()["job"]
        assert job["status"] == "pending", job  # a background job, over sync_row_limit
        deadline = time.monotonic() + 60
        while job["status"] in ("pending", "estimating", "generating"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
            job = requests.get(f"{url}/api/v1/exports/{job['job_id']}", params={"site_id": "demo"},
                               headers=headers, timeout=10).json()  # fmt: skip
        assert job["status"] == "completed", job
        assert job["download_url"].startswith(url), job
        download = requests.get(job["download_url"], timeout=30)
        assert download.status_code == 200
        expected = package_export(
            tmp_path / "sealexports.db",
            ["--site", "demo", "--type", "sources", "--from", str(start), "--to", str(today)],
        )
        assert download.content == expected
        assert expected.count(b"\n") > 5

        # The OpenAPI document (litestar builds it without polyfactory, left out of the binary)
        # and package data (the API docs' assets) come from inside the binary too.
        assert requests.get(f"{url}/schema/openapi.json", timeout=10).json()["paths"]
        css = ROOT / "sealexports" / "api" / "docs_assets" / "swagger-ui.css"
        assert requests.get(f"{url}/schema/assets/swagger-ui.css", timeout=10).content == css.read_bytes()
        page = ROOT / "sealexports" / "ui" / "app.js"
        assert requests.get(f"{url}/ui/static/app.js", timeout=10).content == page.read_bytes()
        # And the web page with its script.
        for path, asset in (("/ui", "index.html"), ("/ui/static/app.js", "app.js")):
            page = ROOT / "sealexports" / "ui" / asset
            assert requests.get(f"{url}{path}", timeout=10).content == page.read_bytes()

        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    stderr = log.read_text()
    assert status in (0, -signal.SIGTERM), stderr  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Traceback" not in stderr, stderr
    assert "Finished server process" in stderr, stderr
