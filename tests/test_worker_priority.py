"""Export worker threads yield the CPU to the threads that answer requests: the thread that runs
`run_next` gets a higher nice value, and only that thread (Linux gives each thread its own)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from sealexports.jobs import runner
from sealexports.jobs.leases import Lease
from sealexports.storage.database import connect
from sealexports.tokens import DownloadTokens

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")


def test_the_worker_thread_runs_at_a_lower_priority_and_only_it(tmp_path: Path) -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int] = {}

    def worker() -> None:
        conn = connect(tmp_path / "db.sqlite")
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        assert runner.run_next(conn, tmp_path, DownloadTokens("k" * 32, 60), Lease(60, "w")) is None
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)
        conn.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"before": before, "after": max(before, runner.WORKER_NICE)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller's unchanged
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # and the process's
