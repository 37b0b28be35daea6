"""Logs and metrics of a real server: every line has a time and a level (text and JSON), requests
carry their X-Request-ID, jobs their id, site and type, download tokens never appear; /metrics
answers in Prometheus text format, parsed here with prometheus_client's own parser."""

from __future__ import annotations

import json
import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from sealexports.config import Settings
from sealexports.jobs.queue import JobQueue
from sealexports.storage import accounts
from sealexports.storage.database import connect
from sealexports.tokens import DownloadTokens
from tests import live
from tests.checks import TEXT_LINE
from tests.conftest import DemoDB, seed_demo

TOKEN = "scrape-me-4f1c"
ENV = {
    "SEALEXPORTS_SYNC_ROW_LIMIT": "1",  # every export goes through the queue and a worker
    "SEALEXPORTS_METRICS_TOKEN": TOKEN,
}


@dataclass
class Work:
    """What a session did against the server, to look for in its log and metrics."""

    job_ids: list[str]
    token: str  # the download token of a completed job
    request_id: str
    rows: int
    size: int
    events_accepted: int


def do_work(server: live.Server, keys: dict[str, str], demo: DemoDB) -> Work:
    key = keys["read"]
    headers = {"X-API-Key": key}
    params = {"site_id": "demo"}
    dates = {"date_from": str(demo.date_from), "date_to": str(demo.date_to)}
    job_ids = []
    for export_type, fmt in (("pages", "csv"), ("sources", "json")):
        body = {"export_type": export_type, "format": fmt, **dates}
        r = requests.post(f"{server.api}/exports", params=params, headers=headers, json=body, timeout=30)
        assert r.status_code == 201, r.text
        job_ids.append(r.json()["job"]["job_id"])
    jobs = [poll(server, key, job_id) for job_id in job_ids]
    url = jobs[0]["download_url"]
    token = url.rsplit("/", 1)[1]
    r = requests.get(url, headers={"X-Request-ID": "dl-req-1"}, timeout=30)
    assert r.status_code == 200
    traced = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": "trace-me-42"}, timeout=10)
    assert traced.headers["x-request-id"] == "trace-me-42"
    events = [
        {"type": "pageview", "ts": "2025-04-01T10:00:00Z", "visitor": "v1", "path": "/a"},
        {"type": "pageview", "ts": "2025-04-01T10:01:00Z", "visitor": "v1", "path": "/b"},
        {"type": "pageview", "ts": "yesterday", "visitor": "v2", "path": "/"},
    ]
    writer = {"X-API-Key": keys["write"]}
    r = requests.post(f"{server.api}/events", params=params, headers=writer, json=events, timeout=30)
    assert r.status_code == 200, r.text
    return Work(
        job_ids=job_ids,
        token=token,
        request_id="trace-me-42",
        rows=sum(j["actual_rows"] for j in jobs),
        size=sum(j["file_size_bytes"] for j in jobs),
        events_accepted=r.json()["accepted"],
    )


def poll(server: live.Server, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        r = requests.get(
            f"{server.api}/exports/{job_id}",
            params={"site_id": "demo"},
            headers={"X-API-Key": key},
            timeout=10,
        )
        job: dict[str, Any] = r.json()
        if job["status"] == "completed":
            return job
        assert job["status"] in ("pending", "estimating", "generating") and time.monotonic() < deadline, job
        time.sleep(0.1)


def config(tmp_path: Path) -> Path:
    """The free plan's one export at a time would refuse the second of a session's exports."""
    path = tmp_path / "sealexports.toml"
    path.write_text("[plans.free]\nconcurrent_exports = 5\n")
    return path


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[DemoDB, dict[str, str]]:
    demo = seed_demo(tmp_path / "sealexports.db", visits=800)
    conn = connect(demo.path)
    keys = {scope: accounts.create_key(conn, "demo", scope, scope=scope) for scope in ("read", "write")}
    conn.close()
    return demo, keys


def parse(line: str, fmt: str) -> dict[str, Any]:
    """A log line as {time, level, logger, message, **fields}: JSON as is; text by its layout."""
    if fmt == "json":
        entry: dict[str, Any] = json.loads(line)
        return entry
    assert TEXT_LINE.match(line), f"no time and level: {line!r}"
    stamp, level, rest = line.split(" ", 2)
    logger, message = rest.lstrip().split(": ", 1)
    fields = dict(re.findall(r" (request_id|job_id|site|type)=(\S+)", message))
    return {"time": stamp, "level": level.lower(), "logger": logger, "message": message, **fields}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_server_log_lines_have_time_level_and_context_never_a_token(
    fmt: str, seeded: tuple[DemoDB, dict[str, str]], tmp_path: Path
) -> None:
    demo, keys = seeded
    server = live.start(
        demo.path, tmp_path, env={**ENV, "SEALEXPORTS_LOG_FORMAT": fmt}, config=config(tmp_path)
    )
    try:
        work = do_work(server, keys, demo)
    finally:
        server.stop(signal.SIGTERM)
    text = server.log.read_text()
    assert work.token not in text  # nowhere: not in the access log, not in a job line
    lines = [parse(line, fmt) for line in text.splitlines()]
    assert all(e["time"] and e["level"] in ("debug", "info", "warning", "error") for e in lines)
    loggers = {e["logger"] for e in lines}
    assert {"uvicorn.error", "sealexports.access", "sealexports.jobs.runner"} <= loggers, loggers
    assert not [e for e in lines if e["logger"].startswith("huey") and e["level"] == "info"]

    access = [e for e in lines if e["logger"] == "sealexports.access"]
    assert all(e.get("request_id") for e in access)  # every request line has one
    traced = [e for e in access if e["request_id"] == work.request_id]
    assert len(traced) == 1 and '"GET /healthz" 200' in traced[0]["message"]
    downloads = [e for e in access if e["request_id"] == "dl-req-1"]
    assert len(downloads) == 1
    assert '"GET /api/v1/exports/download/***" 200' in downloads[0]["message"]
    if fmt == "json":
        assert downloads[0]["path"] == "/api/v1/exports/download/***" and downloads[0]["status"] == 200

    for job_id, export_type in zip(work.job_ids, ["pages", "sources"], strict=True):
        job_lines = [e for e in lines if e.get("job_id") == job_id]
        messages = [e["message"] for e in job_lines]
        assert any(m.startswith("export started") for m in messages), messages
        assert any(m.startswith("export completed") for m in messages), messages
        assert all(e["site"] == "demo" and e["type"] == export_type for e in job_lines)


def scrape(server: live.Server, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{server.url}/metrics", headers=headers, timeout=10)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_after_real_work(seeded: tuple[DemoDB, dict[str, str]], tmp_path: Path) -> None:
    demo, keys = seeded
    with live.running(demo.path, tmp_path, env=ENV, config=config(tmp_path)) as server:
        work = do_work(server, keys, demo)
        assert scrape(server, None).status_code == 401
        assert scrape(server, "wrong").status_code == 401
        r = scrape(server)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        got = samples(r.text)
        # An independent count: the database itself.
        conn = connect(demo.path)
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM export_jobs GROUP BY status").fetchall())
        conn.close()
    assert got[("sealexports_export_jobs", (("status", "completed"),))] == by_status["completed"] == 2
    assert got[("sealexports_export_jobs", (("status", "pending"),))] == 0
    assert got[("sealexports_queue_depth", ())] == 0
    rows = sum(v for (name, _), v in got.items() if name == "sealexports_exported_rows_total")
    size = sum(v for (name, _), v in got.items() if name == "sealexports_exported_bytes_total")
    assert (rows, size) == (work.rows, work.size)
    assert got[("sealexports_exported_rows_total", (("format", "csv"), ("type", "pages")))] > 0
    assert got[("sealexports_export_job_duration_seconds_count", (("type", "pages"),))] == 1
    assert got[("sealexports_export_job_duration_seconds_count", (("type", "sources"),))] == 1
    assert got[("sealexports_events_ingested_total", (("outcome", "accepted"),))] == work.events_accepted == 2
    assert got[("sealexports_events_ingested_total", (("outcome", "rejected"),))] == 1
    created = (("method", "POST"), ("route", "/api/v1/exports"), ("status", "201"))
    assert got[("sealexports_http_requests_total", created)] == 2
    download = (("method", "GET"), ("route", "/api/v1/exports/download/{download_token}"), ("status", "200"))
    assert got[("sealexports_http_requests_total", download)] == 1
    assert not [labels for (name, labels) in got if work.token in str(labels)]


def test_metrics_are_off_without_a_token(seeded: tuple[DemoDB, dict[str, str]], tmp_path: Path) -> None:
    demo, _ = seeded
    with live.running(demo.path, tmp_path) as server:
        assert scrape(server).status_code == 404


def test_metrics_count_jobs_waiting_in_the_queue(
    seeded: tuple[DemoDB, dict[str, str]], tmp_path: Path
) -> None:
    """No worker in this server (workers = 0): created jobs wait, and the gauges read them from
    the database, as they would for jobs created by another process."""
    demo, keys = seeded
    env = {**ENV, "SEALEXPORTS_WORKERS": "0"}
    body = {"export_type": "pages", "date_from": str(demo.date_from), "date_to": str(demo.date_to)}
    with live.running(demo.path, tmp_path, env=env, config=config(tmp_path)) as server:
        for _ in range(3):
            r = requests.post(
                f"{server.api}/exports",
                params={"site_id": "demo"},
                headers={"X-API-Key": keys["read"]},
                json=body,
                timeout=30,
            )
            assert r.status_code == 201, r.text
        got = samples(scrape(server).text)
    assert got[("sealexports_queue_depth", ())] == 3
    assert got[("sealexports_export_jobs", (("status", "pending"),))] == 3


def test_expiry_sweep_is_quiet_when_nothing_expires(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(database=tmp_path / "db.sqlite", exports_dir=tmp_path / "exports")
    connect(settings.database).close()
    queue = JobQueue(settings, DownloadTokens("secret", 60))
    with caplog.at_level(logging.DEBUG, logger="sealexports"):
        assert queue.expire() == 0
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
