"""Full disk and broken storage under the real server: exports fail with a clear message and
leave no temporary file, the service keeps answering, and works again once storage is back.

The disk is a real one: a small tmpfs mounted as the exports folder (we run as root), filled,
or remounted read-only. Everything mounted is unmounted in a finally.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from sealexports.jobs import lifecycle
from sealexports.storage.database import connect
from tests import live
from tests.reliability import (
    Expected,
    Seeded,
    all_jobs,
    body,
    download,
    get_job,
    post_export,
    seed_heavy,
    temp_files,
)

SYNC_ROW_LIMIT = 1000  # sources (50 rows) is generated in the request; pages (2,635) in the background
ENV = {"SEALEXPORTS_SYNC_ROW_LIMIT": str(SYNC_ROW_LIMIT), "SEALEXPORTS_WORKERS": "2"}
NO_SPACE = "could not write the export file: No space left on device"
READ_ONLY = "could not write the export file: Read-only file system"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_heavy(tmp_path_factory.mktemp("storage-template") / "storage.db")


@pytest.fixture
def db(template: Seeded, tmp_path: Path) -> Path:
    return template.copy(tmp_path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `path`, unmounted afterwards whatever happens."""
    path.mkdir(parents=True, exist_ok=True)
    r = _run("mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); see test_exports_dir_broken_*")
    try:
        yield path
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))


def remount(path: Path, mode: str) -> None:
    r = _run("mount", "-o", f"remount,{mode}", str(path))
    assert r.returncode == 0, r.stderr


def fill(path: Path) -> Path:
    """Write until the disk says no more: a real ENOSPC."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@contextmanager
def server_on(db: Path, workdir: Path, exports: Path, **extra: str) -> Iterator[live.Server]:
    server = live.start(db, workdir, env={**ENV, "SEALEXPORTS_EXPORTS_DIR": str(exports), **extra})
    try:
        yield server
    finally:
        if server.process.poll() is None:
            code = server.stop(signal.SIGTERM, timeout=30)
            assert code in (0, -signal.SIGTERM), server.log.read_text()


def healthy(server: live.Server, key: str) -> None:
    """The service still answers: health, and the job list (which also runs the expiry sweep)."""
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
    r = requests.get(
        f"{server.api}/exports", params={"site_id": "demo"}, headers={"X-API-Key": key}, timeout=10
    )
    assert r.status_code == 200, r.text


def export(server: live.Server, seeded: Seeded, export_type: str, fmt: str = "csv") -> dict[str, object]:
    """Create an export and wait for its end; the final job object."""
    r = post_export(server.api, seeded.key, body(seeded.demo, export_type, fmt))
    assert r.status_code == 201, r.text
    job = r.json()["job"]
    deadline = time.monotonic() + 30
    while job["status"] in ("pending", "estimating", "generating"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = get_job(server.api, seeded.key, job["job_id"])
    return dict(job)


def assert_served(server: live.Server, db: Path, job: dict[str, object]) -> None:
    assert job["status"] == "completed", job
    record = next(j for j in all_jobs(db) if j.job_id == job["job_id"])
    status, got = download(str(job["download_url"]))
    assert status == 200
    assert got == Expected(db)(record) == (record.sha256, record.file_size_bytes)


def test_full_disk_fails_exports_cleanly_and_service_recovers(
    template: Seeded, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "exports", "size=256k") as exports, server_on(db, tmp_path, exports) as server:
        # An export bigger than the disk.
        assert template.microconversions >= 50_000
        big = export(server, template, "microconversions")
        assert big["status"] == "failed"
        assert big["error_message"] == NO_SPACE
        assert big["download_url"] is None
        assert os.listdir(exports) == []

        # A disk already full: the background path and the sync path (in the request) both fail.
        filler = fill(exports)
        background = export(server, template, "pages")
        r = post_export(server.api, template.key, body(template.demo, "sources"))
        assert r.status_code == 201, r.text  # a failed job, not a 500
        sync = r.json()
        assert sync["job"]["status"] == "failed"
        assert sync["job"]["error_message"] == NO_SPACE
        assert sync["message"] == f"Export failed: {NO_SPACE}"
        assert background["status"] == "failed"
        assert background["error_message"] == NO_SPACE
        assert os.listdir(exports) == ["filler"]
        healthy(server, template.key)

        # Space is back: the same exports work, on both paths.
        filler.unlink()
        assert_served(server, db, export(server, template, "pages"))
        assert_served(server, db, export(server, template, "sources"))
        assert temp_files(exports) == []
        assert {p.name for p in exports.iterdir()} == {
            j.file_name for j in all_jobs(db) if j.status == "completed"
        }
        jobs = all_jobs(db)
        assert {j.status for j in jobs} == {"completed", "failed"}
    with capsys.disabled():
        print(
            f"\nstorage: full 256k tmpfs: {sum(j.status == 'failed' for j in jobs)} exports failed with "
            f"'No space left on device' (a {big['estimated_rows']:,}-row raw export, "
            "a background one, a sync one answered 201), no temp file left, healthz 200; "
            f"space back: {sum(j.status == 'completed' for j in jobs)} exports completed byte-identical"
        )


def test_read_only_exports_dir_fails_exports_and_keeps_serving(
    template: Seeded, db: Path, tmp_path: Path
) -> None:
    ttl = 4
    extra = {"SEALEXPORTS_DOWNLOAD_TTL_SECONDS": str(ttl)}
    with tmpfs(tmp_path / "exports", "size=64m") as exports:
        server = live.start(db, tmp_path, env={**ENV, "SEALEXPORTS_EXPORTS_DIR": str(exports), **extra})
        try:
            before, other = export(server, template, "sources"), export(server, template, "devices")
            made = time.monotonic()
            remount(exports, "ro")
            try:
                assert_served(server, db, before)  # what was written can still be downloaded
                r = post_export(server.api, template.key, body(template.demo, "countries"))
                assert r.status_code == 201, r.text
                assert r.json()["job"]["status"] == "failed"
                assert r.json()["job"]["error_message"] == READ_ONLY
                for export_type in ("pages", "microconversions"):
                    failed = export(server, template, export_type)
                    assert failed["status"] == "failed"
                    assert failed["error_message"] == READ_ONLY
                healthy(server, template.key)

                # Links that expire while their files cannot be deleted: 410, not 500; and the
                # server still starts (its start-up sweep meets `other`).
                time.sleep(max(0.0, made + ttl + 1.5 - time.monotonic()))
                r = requests.get(str(before["download_url"]), timeout=10)
                assert r.status_code == 410, r.text
                assert get_job(server.api, template.key, str(before["job_id"]))["status"] == "expired"
                assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)
                server = live.start(
                    db, tmp_path, env={**ENV, "SEALEXPORTS_EXPORTS_DIR": str(exports), **extra}
                )
                assert next(j for j in all_jobs(db) if j.job_id == other["job_id"]).status == "expired"
                healthy(server, template.key)
            finally:
                remount(exports, "rw")

            assert_served(server, db, export(server, template, "microconversions"))
            assert temp_files(exports) == []
        finally:
            if server.process.poll() is None:
                assert server.stop(signal.SIGTERM, timeout=30) in (0, -signal.SIGTERM)


def test_exports_dir_broken_path_fails_exports_and_keeps_serving(
    template: Seeded, db: Path, tmp_path: Path
) -> None:
    """No root needed: a folder on the exports path replaced by a regular file (ENOTDIR)."""
    exports = tmp_path / "store" / "exports"
    with server_on(db, tmp_path, exports) as server:
        shutil.rmtree(tmp_path / "store")
        (tmp_path / "store").write_bytes(b"not a folder")
        for export_type in ("sources", "pages"):
            failed = export(server, template, export_type)
            assert failed["status"] == "failed"
            assert failed["error_message"] == "could not write the export file: Not a directory"
        healthy(server, template.key)

        (tmp_path / "store").unlink()
        assert_served(server, db, export(server, template, "pages"))
        assert temp_files(exports) == []


def test_expired_files_are_swept_and_missing_files_answer_410(
    template: Seeded, db: Path, tmp_path: Path
) -> None:
    ttl = 3
    exports = tmp_path / "exports"
    with server_on(db, tmp_path, exports, SEALEXPORTS_DOWNLOAD_TTL_SECONDS=str(ttl)) as server:
        kept, swept, deleted = (export(server, template, t) for t in ("sources", "countries", "devices"))
        # A file deleted by hand: 410 with a clear message, never a 500.
        assert isinstance(deleted["download_url"], str)
        (exports / f"{deleted['job_id']}.csv").unlink()
        r = requests.get(deleted["download_url"], timeout=10)
        assert r.status_code == 410, r.text
        assert r.json()["detail"] == "the export file is no longer available; create a new export"
        assert_served(server, db, kept)

        # The sweep, once the TTL has passed: the expired jobs lose their files.
        time.sleep(ttl + 1)
        conn = connect(db, migrate=False)
        try:
            assert lifecycle.expire_jobs(conn, exports) == 3
        finally:
            conn.close()
        assert os.listdir(exports) == []
        for job in (kept, swept):
            assert get_job(server.api, template.key, str(job["job_id"]))["status"] == "expired"
            r = requests.get(str(job["download_url"]), timeout=10)
            assert r.status_code == 410, r.text
            assert r.json()["detail"] == "this download link has expired; create a new export"

        late = export(server, template, "sources")
        assert (exports / f"{late['job_id']}.csv").is_file()
        time.sleep(ttl + 1)
        # The server sweeps by itself (at start-up and every minute): restart it, call nothing.
        server.stop(signal.SIGTERM)
    with server_on(db, tmp_path, exports, SEALEXPORTS_DOWNLOAD_TTL_SECONDS=str(ttl)):
        assert not (exports / f"{late['job_id']}.csv").exists()
        assert next(j for j in all_jobs(db) if j.job_id == late["job_id"]).status == "expired"
