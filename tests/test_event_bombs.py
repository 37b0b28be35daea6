"""Gzip bombs on POST /api/v1/events against a live server: the body is inflated and parsed off
the event loop, a piece at a time, and given up at the batch limit, so the server keeps answering
and its memory stays small."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import pytest
import requests

from sealexports.storage import accounts
from sealexports.storage.database import connect
from tests import live
from tests.conftest import say

ITEMS = 11_000_000  # `[[],[],...]`: 33 MB inflated from about 32 KB
SENT_AT_ONCE = 3


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory (or its peak, VmHWM) from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_gzip_bombs_neither_stall_the_server_nor_blow_its_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "sealexports.db"
    conn = connect(db)
    accounts.create_site(conn, "shop")
    key = accounts.create_key(conn, "shop", scope="write")
    conn.close()
    bomb = gzip.compress(b"[" + b"[]," * (ITEMS - 1) + b"[]]", 9)
    assert len(bomb) < 40_000

    with live.running(db, tmp_path) as server:
        pid = server.process.pid
        requests.get(f"{server.url}/healthz", timeout=5)
        before = rss_mib(pid)
        statuses: list[int] = []
        peak = before

        def send() -> None:
            r = requests.post(
                f"{server.api}/events",
                params={"site_id": "shop"},
                data=bomb,
                headers={"X-API-Key": key, "Content-Type": "application/json", "Content-Encoding": "gzip"},
                timeout=120,
            )
            statuses.append(r.status_code)

        senders = [threading.Thread(target=send) for _ in range(SENT_AT_ONCE)]
        started = time.monotonic()
        for t in senders:
            t.start()
        slowest, polls = 0.0, 0
        while any(t.is_alive() for t in senders):
            t0 = time.monotonic()
            assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
            polls += 1
            peak = max(peak, rss_mib(pid))
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        for t in senders:
            t.join()
        peak = max(peak, rss_mib(pid, "VmHWM"))

    say(
        capsys,
        f"event bombs: {SENT_AT_ONCE} gzip bodies of {len(bomb):,} bytes ({ITEMS:,} items each) at once: "
        f"all {sorted(set(statuses))} in {elapsed:.2f} s; /healthz answered {polls} times, slowest "
        f"{slowest * 1000:.0f} ms; RSS {before:.0f} MiB before, peak {peak:.0f} MiB",
    )
    assert statuses == [413] * SENT_AT_ONCE
    assert slowest < 1.0  # generous: it was 5.8 s for one bomb when parsed on the event loop
    assert peak < before + 200  # it was over 1 GB for one bomb
