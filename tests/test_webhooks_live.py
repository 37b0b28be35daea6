"""Webhooks from a real server: SIGKILLed while a delivery is in flight, the restarted server sends
that delivery again (same id, same body) and nothing more; a new event still gets exactly one."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from sealexports.config import Settings
from sealexports.storage import accounts
from sealexports.storage import webhooks as store
from sealexports.storage.database import connect
from sealexports.webhooks import endpoints
from tests import live
from tests.apps import Template
from tests.conftest import say
from tests.receiver import receiving

ENV = {"SEALEXPORTS_WEBHOOKS_ALLOW_PRIVATE": "true", "SEALEXPORTS_WEBHOOKS_TIMEOUT_SECONDS": "2"}


def export(server: live.Server, key: str, small: Template) -> str:
    r = requests.post(
        f"{server.api}/exports", params={"site_id": small.site_id}, headers={"X-API-Key": key}, timeout=30,
        json={"export_type": "sources", "format": "csv",
              "date_from": small.date_from, "date_to": small.date_to},
    )  # fmt: skip
    assert r.status_code == 201 and r.json()["job"]["status"] == "completed", r.text
    return str(r.json()["job"]["job_id"])


def test_sigkill_mid_delivery_then_restart_sends_each_event_once(
    small: Template, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "live.db"
    shutil.copyfile(small.path, db)
    hold = threading.Event()
    with receiving(hold=hold) as rx:
        conn = connect(db)
        site = accounts.get_site(conn, small.site_id)
        key = accounts.create_key(conn, account=site.account.name)
        endpoints.add(conn, Settings(database=db, webhooks_allow_private=True), site.account.id,
                                  rx.url, None)  # fmt: skip
        conn.close()
        server = live.start(db, tmp_path, env=ENV)
        try:
            first_job = export(server, key, small)
            (held,) = rx.wait_for(1)  # the receiver has it, and does not answer yet
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            server.process.kill()
        hold.set()
        with live.running(db, tmp_path, env=ENV) as again:
            started = time.monotonic()
            retried = rx.wait_for(2, timeout=30)[1]  # once the dead process's claim has run out
            took = time.monotonic() - started
            second_job = export(again, key, small)
            third = rx.wait_for(3)[2]
            job = requests.get(f"{again.api}/exports/{second_job}", params={"site_id": small.site_id},
                               headers={"X-API-Key": key}, timeout=10).json()  # fmt: skip
            time.sleep(3)  # time for any duplicate to show up
            assert len(rx.received) == 3, [r.headers["X-Sealexports-Delivery"] for r in rx.received]
    assert retried.headers["X-Sealexports-Delivery"] == held.headers["X-Sealexports-Delivery"]
    assert retried.body == held.body and json.loads(held.body)["data"]["job"]["job_id"] == first_job
    assert json.loads(third.body)["data"]["job"] == job
    assert third.headers["X-Sealexports-Delivery"] != held.headers["X-Sealexports-Delivery"]
    conn = connect(db)
    deliveries = store.list_deliveries(conn)
    assert sorted((d.job_id, d.status, d.attempts) for d in deliveries) == sorted(
        [(first_job, "delivered", 1), (second_job, "delivered", 1)]
    )
    conn.close()
    say(capsys, f"webhooks: the delivery killed mid-attempt was sent again {took:.1f} s after the restart")
