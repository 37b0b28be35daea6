"""The log formats (sealexports.logs): time and level on every line, context fields, tracebacks."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sealexports import logs
from sealexports.storage.database import connect
from tests.checks import TEXT_LINE


def emit() -> None:
    log = logging.getLogger("sealexports.test")
    with logs.context(job_id="j-1", site="demo", type="pages"):
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.exception("export failed: %s", "boom")
    log.info("outside", extra={"fields": {"status": 200}})
    log.debug("not shown at info")
    logging.getLogger("huey.consumer").info("Enqueueing periodic task expire_exports.")
    logging.getLogger("huey.consumer").error("a huey error is shown")


def test_text_lines_all_have_time_and_level_tracebacks_included(captured: io.StringIO) -> None:
    logs.configure("info", "text", captured)
    emit()
    lines = captured.getvalue().splitlines()
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert lines[0].endswith("export failed: boom job_id=j-1 site=demo type=pages")
    assert any(line.endswith("| ZeroDivisionError: division by zero") for line in lines)
    assert lines[-2].endswith("sealexports.test: outside")  # no job context once out of the block
    assert lines[-1].endswith("huey.consumer: a huey error is shown")
    assert not [line for line in lines if "not shown" in line or "Enqueueing" in line]


def test_json_lines_parse_with_context_and_fields(captured: io.StringIO) -> None:
    logs.configure("debug", "json", captured)
    emit()
    entries = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [e["level"] for e in entries] == ["error", "info", "debug", "info", "error"]  # huey at debug
    first = entries[0]
    assert (first["job_id"], first["site"], first["type"], first["logger"]) == (
        "j-1",
        "demo",
        "pages",
        "sealexports.test",
    )
    assert "ZeroDivisionError" in first["exception"]
    assert entries[1]["status"] == 200 and "job_id" not in entries[1]
    assert all(e["time"].endswith("Z") for e in entries)


def test_worker_logs_json_at_the_level_asked(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    connect(db).close()
    env = {
        **os.environ,
        "SEALEXPORTS_LOG_FORMAT": "json",
        "SEALEXPORTS_EXPORTS_DIR": str(tmp_path / "exports"),
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "sealexports", "--db", str(db), "worker", "--log-level", "debug"],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while "worker running" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    messages = [e["message"] for e in entries]
    assert "worker running with 2 threads; Ctrl-C to stop" in messages
    assert any(e["level"] == "debug" for e in entries)  # huey's start-up lines, shown at debug


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/exports/download/SECRET",
        "/api/v1/exports//download/SECRET",  # the router takes these to the download handler too
        "/api/v1//exports/download/SECRET",
        "/api/v1/exports/download//SECRET",
        "/api/v1/exports/download/SECRET/",
        "//api/v1/exports/download/SECRET",
        "/exports/api/v1/exports/download/SECRET",  # under a path prefix
    ],
)
def test_the_access_log_never_shows_a_download_token(
    path: str, tmp_path: Path, captured: io.StringIO
) -> None:
    from litestar.testing import TestClient

    from sealexports.api.app import create_app
    from sealexports.config import Settings

    logs.configure("info", "text", captured)
    app = create_app(Settings(database=tmp_path / "db", exports_dir=tmp_path / "out"), run_workers=False)
    with TestClient(app) as client:
        assert client.get(path, headers={"X-Request-ID": "masked-1"}).status_code == 404
    server = [line for line in captured.getvalue().splitlines() if " httpx: " not in line]  # the client's
    lines = [line for line in server if "request_id=masked-1" in line]
    assert len(lines) == 1 and "/download/***" in lines[0]
    assert not [line for line in server if "SECRET" in line]
