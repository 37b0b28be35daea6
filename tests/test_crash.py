"""Crash recovery on the real server: SIGKILL at random moments, SIGTERM while generating.

The database is the truth: every check reads export_jobs and the exports folder directly, and
every file is compared with a fresh `engine.chunks` of the job's request.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from sealexports.storage.database import connect
from sealexports.storage.export_jobs import Status
from tests import live
from tests.conftest import say
from tests.reliability import (
    Expected,
    Seeded,
    all_jobs,
    body,
    download,
    file_digest,
    get_job,
    integrity,
    post_export,
    seed_heavy,
    temp_files,
    wait_settled,
)

SEED = 20250405
KILLS = 12
KILL_DELAY = (0.05, 2.0)  # seconds after /healthz answers
# Every other kill waits for an export to be running, then this much more: exports got fast
# enough that random moments alone could all fall between them.
MID_EXPORT_DELAY = (0.0, 0.05)
# A short lease: after a SIGKILL, the next server takes the dead one's jobs over this soon.
ENV = {"SEALEXPORTS_SYNC_ROW_LIMIT": "100", "SEALEXPORTS_WORKERS": "2", "SEALEXPORTS_JOB_LEASE_SECONDS": "2"}
SLOW = {"advanced_filters": "path:not_regex:^/nowhere/"}  # SQLite calls Python's re on every row
# Big raw exports, a slower filtered one, small raw and aggregates.
VARIANTS = [
    ("microconversions", "csv", None),
    ("microconversions", "json", SLOW),
    ("microconversions", "csv", {"device_type": ["desktop", "mobile"]}),
    ("conversions", "json", None),
    ("pages", "csv", None),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_heavy(tmp_path_factory.mktemp("crash-template") / "crash.db")


def check_completed_files(db: Path, exports: Path, expected: Expected, checked: set[str]) -> int:
    """Every completed job's file is whole: its sha256 and size are the recorded ones and those of
    a fresh `engine.chunks`. Checked once per job (a completed file never changes)."""
    n = 0
    for job in all_jobs(db):
        if job.status == "completed" and job.job_id not in checked:
            assert job.file_name is not None
            on_disk = file_digest(exports / job.file_name)
            assert on_disk == (job.sha256, job.file_size_bytes), job
            assert on_disk == expected(job), job
            checked.add(job.job_id)
            n += 1
    return n


def kill_later(process: subprocess.Popen[bytes], db: Path, delay: float, mid_export: bool) -> None:
    """SIGKILL `delay` seconds from now or, if `mid_export`, from when a job is seen running (or
    from 10 s, if none runs by then)."""
    if mid_export:
        until = time.monotonic() + 10
        while time.monotonic() < until and not any(
            j.status in ("estimating", "generating") for j in all_jobs(db)
        ):
            time.sleep(0.005)
    time.sleep(delay)
    process.kill()


def test_sigkill_at_random_moments_loses_and_half_serves_nothing(
    template: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert template.microconversions >= 50_000  # the raw export takes a noticeable time
    db = template.copy(tmp_path)
    exports = tmp_path / "exports"
    expected = Expected(db)
    rng = random.Random(SEED)
    kills = hit_running = left_temp = refused = served = 0
    checked: set[str] = set()
    downloaded: set[str] = set()

    for round_ in range(KILLS):
        server = live.start(db, tmp_path, env=ENV)
        mid_export = round_ % 2 == 1
        delay = rng.uniform(*(MID_EXPORT_DELAY if mid_export else KILL_DELAY))
        timer = threading.Thread(target=kill_later, args=(server.process, db, delay, mid_export))
        timer.start()
        try:
            active = sum(j.status in ("pending", "estimating", "generating") for j in all_jobs(db))
            for _ in range(rng.randint(1, 3) if active < 8 else 0):
                export_type, fmt, filters = rng.choice(VARIANTS)
                r = post_export(server.api, template.key, body(template.demo, export_type, fmt, filters))
                assert r.status_code in (201, 429), r.text
                refused += r.status_code == 429
                if r.status_code == 201:
                    assert r.json()["job"]["status"] == "pending", r.text
            # Until the kill: download what completes; a download must never be a partial file.
            while server.process.poll() is None:
                for job in all_jobs(db):
                    if job.status != "completed" or job.job_id in downloaded:
                        continue
                    url = get_job(server.api, template.key, job.job_id)["download_url"]
                    status, got = download(url)
                    assert status == 200
                    assert got == expected(job), job
                    downloaded.add(job.job_id)
                    served += 1
                time.sleep(0.05)
        except requests.RequestException:
            pass  # the kill landed during a request: that is the point
        finally:
            timer.join()
            server.process.wait(timeout=10)
        assert server.process.returncode == -signal.SIGKILL
        kills += 1
        # The state a crash leaves: some jobs mid-run, maybe temp files; completed files whole.
        after = all_jobs(db)
        hit_running += sum(j.status in ("estimating", "generating") for j in after)
        left_temp += len(temp_files(exports))
        check_completed_files(db, exports, expected, checked)
        assert integrity(db) == "ok"
        assert integrity(db.with_name(db.name + ".queue")) == "ok"

    server = live.start(db, tmp_path, env=ENV)
    try:
        jobs = wait_settled(db, timeout=60)
        statuses = Counter(j.status for j in jobs)
        assert set(statuses) <= {"completed", "failed"}, statuses
        for job in jobs:
            assert job.attempts <= 3, job
            if job.status == "failed":
                assert job.error_message == f"the export was interrupted {job.attempts} times; giving up", job
                continue
            assert job.error_message is None
            url = get_job(server.api, template.key, job.job_id)["download_url"]
            status, got = download(url)
            assert status == 200
            assert got == expected(job) == (job.sha256, job.file_size_bytes), job
        check_completed_files(db, exports, expected, checked)
        # Nothing left behind: no temp file, and no file but the completed jobs'.
        assert temp_files(exports) == []
        files = {p.name for p in exports.iterdir()}
        assert files == {j.file_name for j in jobs if j.status == "completed"}
    finally:
        code = server.stop(signal.SIGTERM, timeout=30)
    assert code in (0, -signal.SIGTERM)
    assert integrity(db) == "ok"
    assert integrity(db.with_name(db.name + ".queue")) == "ok"

    assert kills == KILLS
    assert statuses[Status.COMPLETED] >= 1
    assert hit_running >= 1, "no kill landed while an export was running: the test proves nothing"
    say(
        capsys,
        f"crash: {kills} SIGKILLs survived; {len(jobs)} jobs: {statuses[Status.COMPLETED]} completed, "
        f"{statuses[Status.FAILED]} failed (interrupted 3 times); kills caught {hit_running} running "
        f"exports and left {left_temp} temp files (all removed at restart); {served} downloads "
        f"mid-run + {statuses[Status.COMPLETED]} at the end byte-identical; {refused} creates refused (429)",
    )


def test_kill_between_rename_and_commit_leaves_no_stray_file(template: Seeded, tmp_path: Path) -> None:
    """A SIGKILL after `os.replace` but before the `completed` commit leaves a whole file for a
    job the database still calls generating (and temp files of other exports). At restart such a
    job runs again, or fails if that was its last attempt: then its file must go too."""
    db = template.copy(tmp_path)
    exports = tmp_path / "exports"
    server = live.start(db, tmp_path, env=ENV)
    try:
        ids = [
            post_export(server.api, template.key, body(template.demo, t, f)).json()["job"]["job_id"]
            for t, f in (("conversions", "csv"), ("pages", "json"))
        ]
        assert {j.status for j in wait_settled(db, timeout=30)} == {"completed"}
    finally:
        server.stop(signal.SIGKILL)
    last_try, retried = ids
    conn = connect(db, migrate=False)
    for job_id, attempts in ((last_try, 3), (retried, 1)):
        conn.execute(
            "UPDATE export_jobs SET status = 'generating', progress_percent = 99, attempts = ?, "
            "actual_rows = NULL, file_size_bytes = NULL, sha256 = NULL, file_name = NULL, "
            "download_token = NULL, completed_at = NULL, download_expires_at = NULL WHERE job_id = ?",
            [attempts, job_id],
        )
    conn.close()
    (exports / f".{retried}.json.a1b2c3.tmp").write_bytes(b'[\n{"path": "/half')
    stray = exports / ".part-140000-140001.tmp"  # of no job, left long ago
    stray.write_bytes(b"2025-03-20,2025-03-20T10:00:00Z,newsl")
    os.utime(stray, (time.time() - 3600, time.time() - 3600))
    assert (exports / f"{last_try}.csv").is_file()

    server = live.start(db, tmp_path, env=ENV)
    try:
        jobs = {j.job_id: j for j in wait_settled(db, timeout=30)}
        assert jobs[last_try].status == "failed"
        assert jobs[last_try].error_message == "the export was interrupted 3 times; giving up"
        assert jobs[retried].status == "completed"
        assert jobs[retried].attempts == 2
        status, got = download(get_job(server.api, template.key, retried)["download_url"])
        assert status == 200
        assert got == Expected(db)(jobs[retried]) == (jobs[retried].sha256, jobs[retried].file_size_bytes)
        assert sorted(p.name for p in exports.iterdir()) == [f"{retried}.json"]
    finally:
        server.stop(signal.SIGTERM)


def test_sigterm_while_generating_then_restart_completes_all(
    template: Seeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = template.copy(tmp_path)
    exports = tmp_path / "exports"
    expected = Expected(db)
    server = live.start(db, tmp_path, env=ENV)
    try:
        for export_type, fmt, filters in (VARIANTS[1], VARIANTS[2], VARIANTS[1], VARIANTS[2]):
            r = post_export(server.api, template.key, body(template.demo, export_type, fmt, filters))
            assert r.status_code == 201, r.text
        # Both workers mid-file (or at least one, if the machine is too slow for that).
        deadline = time.monotonic() + 20
        while sum(j.status == "generating" and j.progress_percent > 0 for j in all_jobs(db)) < 2:
            if time.monotonic() > deadline:
                assert any(j.status == "generating" for j in all_jobs(db)), "no export started generating"
                break
            time.sleep(0.02)
        generating = {j.job_id for j in all_jobs(db) if j.status == "generating"}
        started = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - started
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert code in (0, -signal.SIGTERM)
    assert took < 15, f"SIGTERM took {took:.1f}s"
    assert "Application shutdown complete" in server.log.read_text()

    stopped = all_jobs(db)
    assert {j.status for j in stopped} <= {"pending", "completed"}, [(j.job_id, j.status) for j in stopped]
    back = [j for j in stopped if j.status == "pending" and j.attempts >= 1]
    assert {j.job_id for j in stopped if j.job_id in generating} <= {j.job_id for j in back} | {
        j.job_id for j in stopped if j.status == "completed"
    }
    assert back, "SIGTERM came while exports were generating; none went back to pending"
    assert all(j.progress_percent == 0 for j in back)
    assert temp_files(exports) == []
    assert {p.name for p in exports.iterdir()} == {j.file_name for j in stopped if j.status == "completed"}

    server = live.start(db, tmp_path, env=ENV)
    try:
        jobs = wait_settled(db, timeout=60)
        assert {j.status for j in jobs} == {"completed"}
        for job in jobs:
            status, got = download(get_job(server.api, template.key, job.job_id)["download_url"])
            assert status == 200
            assert got == expected(job) == (job.sha256, job.file_size_bytes)
        assert temp_files(exports) == []
    finally:
        assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
    say(
        capsys,
        f"sigterm: {len(generating)} exports generating at the signal; exited cleanly in {took:.1f}s; "
        f"{len(back)} went back to pending, {sum(j.status == 'completed' for j in stopped)} had completed; "
        f"after restart all {len(jobs)} completed byte-identical",
    )
