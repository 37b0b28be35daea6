"""The job state machine (jobs/lifecycle.py), move by move: every (from, to) pair of statuses on a
real job row, checked against the table below, written out by hand from the design (not read
from the machine's own map)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import pytest

from sealexports.errors import Conflict
from sealexports.jobs.lifecycle import transition
from sealexports.storage import accounts
from sealexports.storage.database import connect
from sealexports.storage.export_jobs import Status

STATUSES = ["pending", "estimating", "generating", "completed", "failed", "expired"]
# pending -> estimating -> generating -> completed -> expired; an unfinished job may fail; a
# running one stopped by a shutdown goes back to pending. Nothing leaves failed or expired.
MOVES = {
    ("pending", "estimating"), ("pending", "failed"),
    ("estimating", "generating"), ("estimating", "pending"), ("estimating", "failed"),
    ("generating", "completed"), ("generating", "pending"), ("generating", "failed"),
    ("completed", "expired"),
}  # fmt: skip
PAIRS = [(a, b) for a in STATUSES for b in STATUSES]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path_factory.mktemp("lifecycle") / "jobs.db")
    accounts.create_site(conn, "demo", timezone="Europe/Madrid")
    yield conn
    conn.close()


def new_job(conn: sqlite3.Connection, status: str) -> str:
    job_id = str(uuid.uuid4())
    site = accounts.get_site(conn, "demo")
    conn.execute(
        "INSERT INTO export_jobs (job_id, account_id, site_id, export_type, format, date_from, date_to, "
        "filters, status, estimated_rows, created_at) "
        "VALUES (?, ?, 'demo', 'sources', 'csv', '2025-03-01', '2025-03-31', '{}', ?, 10, "
        "'2025-04-01T00:00:00Z')",
        [job_id, site.account.id, status],
    )
    return job_id


def status_of(conn: sqlite3.Connection, job_id: str) -> str:
    return str(conn.execute("SELECT status FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()[0])


def test_the_machine_has_exactly_these_statuses() -> None:
    assert sorted(s.value for s in Status) == sorted(STATUSES)


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_move_is_allowed_or_refused_as_the_table_says(
    conn: sqlite3.Connection, source: str, target: str
) -> None:
    job_id = new_job(conn, source)
    if (source, target) in MOVES:
        assert transition(conn, job_id, Status(source), Status(target)) is True
        assert status_of(conn, job_id) == target
    else:
        with pytest.raises(Conflict, match=f"from {source} to {target}"):
            transition(conn, job_id, Status(source), Status(target))
        assert status_of(conn, job_id) == source


def test_a_move_from_several_statuses_is_refused_if_one_of_them_forbids_it(conn: sqlite3.Connection) -> None:
    job_id = new_job(conn, "generating")
    with pytest.raises(Conflict, match="from completed to failed"):
        transition(conn, job_id, (Status.GENERATING, Status.COMPLETED), Status.FAILED)
    assert status_of(conn, job_id) == "generating"
    assert transition(conn, job_id, (Status.ESTIMATING, Status.GENERATING), Status.FAILED) is True
    assert status_of(conn, job_id) == "failed"


def test_an_allowed_move_of_a_job_that_moved_on_meanwhile_changes_nothing(conn: sqlite3.Connection) -> None:
    job_id = new_job(conn, "completed")  # say, a worker still thinks it is generating
    assert transition(conn, job_id, Status.GENERATING, Status.FAILED, error_message="late") is False
    row = conn.execute("SELECT status, error_message FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()
    assert tuple(row) == ("completed", None)
    assert transition(conn, "no-such-job", Status.PENDING, Status.ESTIMATING) is False


def test_changes_are_written_with_the_move(conn: sqlite3.Connection) -> None:
    job_id = new_job(conn, "generating")
    assert transition(conn, job_id, Status.GENERATING, Status.FAILED, error_message="disk full") is True
    row = conn.execute("SELECT status, error_message FROM export_jobs WHERE job_id = ?", [job_id]).fetchone()
    assert tuple(row) == ("failed", "disk full")
