"""One key cannot starve the service: advanced filters are capped, every query that serves a
request has a deadline and stops when its client hangs up, SIGTERM does not wait behind a query,
and a background job has a time limit after which its worker thread is free again."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from sealexports.cli import cli
from sealexports.config import DEFAULT_PLANS, Plan
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live
from tests.apps import SLOW_FILTERS, ApiFactory, Template
from tests.checks import assert_cli_error
from tests.conftest import say, seed_demo

# The pro plan without its rate limit: the job tests poll.
PLANS = {**DEFAULT_PLANS, "pro": Plan(concurrent_exports=3, max_rows=1_000_000, requests_per_minute=10**6)}


def _expression(n: int, op: str = "ne") -> str:
    return ",".join(f"path:{op}:{i}" for i in range(n))


# --- Caps on advanced filters -----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["estimate", "create", "stream"])
def test_1001_conditions_are_a_422_naming_the_limit_not_a_500(
    make: ApiFactory, big: Template, endpoint: str
) -> None:
    """SQLite refused the query (`Expression tree is too large`): a 500 before the cap."""
    api = make(big)
    call = getattr(api, endpoint)
    r = call(api.body("pages", filters={"advanced_filters": _expression(1001)}))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["message"] == "advanced_filters has 1001 conditions; at most 20 are allowed"
    assert error["detail"][0]["field"] == "filters.advanced_filters"
    with api.conn() as conn:
        assert conn.execute("SELECT count(*) FROM export_jobs").fetchone()[0] == 0


def test_many_regexes_are_a_422_naming_the_limit(make: ApiFactory, big: Template) -> None:
    """490 `path:regex:/|N` took 31 s of CPU on one estimate before the cap; 6 is one too many."""
    api = make(big)
    six = _expression(6, "regex")
    r = api.estimate(api.body("pages", filters={"advanced_filters": six}))
    assert r.status_code == 422, r.text
    assert "at most 5 are allowed" in r.json()["error"]["message"]
    assert "regex" in r.json()["error"]["message"]
    # At the limits: 20 conditions of which 5 regexes are taken.
    at_limits = _expression(15) + "," + _expression(5, "not_regex")
    r = api.estimate(api.body("pages", filters={"advanced_filters": at_limits}))
    assert r.status_code == 200, r.text


def test_cli_refuses_too_many_conditions_with_one_error_line(tmp_path: Path) -> None:
    db = seed_demo(tmp_path / "cli.db", visits=200, days=3)
    args = ["--db", str(db.path), "export", "--site", "demo", "--type", "pages", "--from", str(db.date_from),
            "--to", str(db.date_to), "-o", "-", "--advanced", _expression(21)]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert_cli_error(result, "advanced_filters has 21 conditions; at most 20 are allowed")


# --- Deadlines for the queries that serve a request ------------------------------------------------


@pytest.mark.parametrize("endpoint", ["estimate", "create", "stream"])
def test_a_regex_heavy_query_stops_at_the_deadline(
    make: ApiFactory, big: Template, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five slow regexes over 40,000 page views: about half a minute of CPU with no deadline."""
    api = make(big, query_timeout_seconds=0.5, plan="pro", plans=PLANS)
    started = time.monotonic()
    r = getattr(api, endpoint)(api.body("pages", filters=SLOW_FILTERS))
    took = time.monotonic() - started
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "query_timeout"
    assert "took longer than 0.5 s (query_timeout_seconds)" in error["message"]
    assert "narrow the date range or the filters, or create a background export" in error["message"]
    with api.conn() as conn:
        assert conn.execute("SELECT count(*) FROM export_jobs").fetchone()[0] == 0
    assert api.files() == []
    say(
        capsys,
        f"deadline: {endpoint} with 5 slow regexes over 40,000 page views answered 422 in {took:.2f} s",
    )


def test_a_sync_export_whose_own_query_passes_the_deadline_fails_and_leaves_no_file(
    make: ApiFactory, big: Template
) -> None:
    """A time series' estimate needs no query (one row a day), its export does: the request's
    deadline stops the export, the job fails with the deadline's message, no file is left."""
    api = make(big, query_timeout_seconds=0.5, plan="pro", plans=PLANS)
    r = api.create(api.body("time_series", filters=SLOW_FILTERS))
    assert r.status_code == 201, r.text
    job = r.json()["job"]
    assert job["status"] == "failed", job
    assert "took longer than 0.5 s (query_timeout_seconds)" in job["error_message"]
    assert r.json()["message"] == f"Export failed: {job['error_message']}"
    assert api.files() == []


def _raw_request(port: int, path: str, key: str, body: bytes) -> socket.socket:
    """Send a POST and return the open socket without reading the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def served(big: Template, tmp_path: Path) -> Iterator[tuple[live.Server, str]]:
    """A live server on a copy of the big template, with a minute of query deadline."""
    db = tmp_path / "live.db"
    db.write_bytes(big.path.read_bytes())
    conn = connect(db)
    key = create_key(conn, big.site_id)
    conn.close()
    env = {"SEALEXPORTS_QUERY_TIMEOUT_SECONDS": "60", "SEALEXPORTS_WORKERS": "1"}
    with live.running(db, tmp_path, env=env) as server:
        yield server, key


def _slow_body(big: Template) -> bytes:
    return json.dumps(
        {"export_type": "pages", "date_from": big.date_from, "date_to": big.date_to, "filters": SLOW_FILTERS}
    ).encode()


@pytest.mark.parametrize("endpoint", ["estimate", "stream"])
def test_a_client_that_hangs_up_stops_its_query(
    served: tuple[live.Server, str], big: Template, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the query ran on to its end (26 s after the client left, in the report)."""
    server, key = served
    port = int(server.url.rsplit(":", 1)[1])
    sock = _raw_request(port, f"/api/v1/exports/{endpoint}?site_id={big.site_id}", key, _slow_body(big))
    time.sleep(1.0)  # the query is running
    sock.close()
    time.sleep(1.0)  # it stops within a few milliseconds; give a loaded machine a second
    after = _cpu_seconds(server.process.pid)
    time.sleep(2.0)
    idle = _cpu_seconds(server.process.pid) - after
    say(
        capsys,
        f"disconnect: {endpoint}: server CPU {idle:.2f} s in the 2 s after the client left (+1 s grace)",
    )
    assert idle < 0.5, f"the server kept working after the client left: {idle:.2f} s of CPU in 2 s"
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_sigterm_does_not_wait_behind_a_long_query(
    served: tuple[live.Server, str], big: Template, capsys: pytest.CaptureFixture[str]
) -> None:
    """A regex-heavy estimate with a minute of deadline is running: SIGTERM stops its query at
    once (the client gets a 503 that says why) and the server exits (it used to wait for the query)."""
    server, key = served
    port = int(server.url.rsplit(":", 1)[1])
    sock = _raw_request(port, f"/api/v1/exports/estimate?site_id={big.site_id}", key, _slow_body(big))
    try:
        time.sleep(1.0)
        started = time.monotonic()
        status = server.stop(signal.SIGTERM, timeout=20)
        took = time.monotonic() - started
        sock.settimeout(5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    say(
        capsys,
        f"sigterm: exited in {took:.1f} s with a regex-heavy estimate running; it answered {head[:12]!r}",
    )
    assert status in (0, -signal.SIGTERM)
    assert head.startswith(b"HTTP/1.1 503"), answer[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "interrupted"
    assert error["message"] == "the service is stopping; try again in a moment"
    assert "Traceback" not in server.log.read_text()


# --- Background jobs have a time limit ----------------------------------------------------------------


def test_a_job_past_its_time_limit_fails_removes_its_file_and_frees_the_worker(
    make: ApiFactory, big: Template, capsys: pytest.CaptureFixture[str]
) -> None:
    """One worker thread (the real huey consumer), a 1 s limit, a slow export (seconds): it fails
    with a clear message and leaves no file; then the next job runs on the same thread."""
    api = make(big, sync_row_limit=50, workers=1, job_timeout_seconds=1, plan="pro", plans=PLANS)
    slow = api.created(api.body("microconversions", filters=SLOW_FILTERS))["job"]["job_id"]
    job, _ = api.wait(slow, timeout=60)
    assert job["status"] == "failed", job
    assert job["error_message"] == (
        "the export took longer than 1 s (job_timeout_seconds) and was stopped; "
        "narrow the date range or the filters"
    )
    assert api.files() == []  # neither the file nor its temporary file
    quick = api.created(api.body("microconversions"))["job"]["job_id"]
    job, _ = api.wait(quick, timeout=60)
    assert job["status"] == "completed", job
    assert api.download(job["download_url"]).content == api.offline_bytes(api.body("microconversions"))
    say(capsys, f"job timeout: failed at the 1 s limit; the next job completed ({job['actual_rows']:,} rows)")
