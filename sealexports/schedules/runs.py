"""Adding schedules, and running them: each run an ordinary export job (same limits, links and
webhooks), created pending for the workers. Runs missed while no process was up are not
replayed one by one: a schedule past due runs once, and its next run is the next slot after now.
With `deliver_to_dir`, the finished file and its manifest are copied there, each atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sealexports.config import Settings
from sealexports.errors import InvalidRequest, SealExportsError
from sealexports.exports import engine, manifest
from sealexports.exports.request import ExportRequest, build_request
from sealexports.jobs import lifecycle
from sealexports.jobs.runner import request_for
from sealexports.schedules import cadence as cadences
from sealexports.schedules import ranges
from sealexports.storage import export_jobs
from sealexports.storage import schedules as store
from sealexports.storage.accounts import Site, get_site
from sealexports.storage.deadline import Deadline

log = logging.getLogger(__name__)
ORPHAN_SECONDS = 60.0  # a run with no job this long after it was claimed: its process died
COPY_LEASE_SECONDS = 300.0


def add(
    conn: sqlite3.Connection,
    site: Site,
    *,
    export_type: str,
    fmt: str = "csv",
    compression: str | None = None,
    filters: dict[str, Any] | None = None,
    range_name: str,
    every: str,
    at: str,
    day: str | int | None = None,
    deliver_to_dir: str | None = None,
    now: float | None = None,
) -> store.Schedule:
    """A new schedule for the site, every value checked first (nothing written if one is bad)."""
    ranges.check(range_name)
    cadence = cadences.parse(every, at, day)
    today = datetime.now(ZoneInfo(site.timezone)).date()
    day_text = today.isoformat()
    req = build_request(  # the same checks as an export's
        site.site_id, export_type, fmt, day_text, day_text, filters or {}, compression=compression
    )
    folder = None
    if deliver_to_dir is not None:
        path = Path(deliver_to_dir)
        if not path.is_absolute() or not path.is_dir() or not os.access(path, os.W_OK):
            raise InvalidRequest(
                f"deliver_to_dir must be an existing folder the service can write, given as an absolute "
                f"path; got {deliver_to_dir!r}",
                field="deliver_to_dir",
            )
        folder = str(path)
    now = time.time() if now is None else now
    first = cadence.next_run(datetime.fromtimestamp(now, UTC), ZoneInfo(site.timezone))
    return store.add_schedule(conn, {
        "account_id": site.account.id, "site_id": site.site_id, "export_type": export_type,
        "format": req.format, "compression": req.compression,
        "filters": json.dumps(filters or {}, separators=(",", ":")), "range": range_name,
        "every": cadence.every, "at": cadence.at, "day": cadence.day, "deliver_to_dir": folder,
        "next_run_at": first.timestamp(),
    })  # fmt: skip


def cadence_of(schedule: store.Schedule) -> cadences.Cadence:
    return cadences.Cadence(schedule.every, schedule.at, schedule.day)


def request_of(
    schedule: store.Schedule, timezone: str, now: float, *, formula_guard: bool = True
) -> ExportRequest:
    """The export a run started at `now` makes: the range as the site's local days then."""
    today = datetime.fromtimestamp(now, ZoneInfo(timezone)).date()
    first, last = ranges.dates(schedule.range, today)
    return build_request(
        schedule.site_id, schedule.export_type, schedule.format, first.isoformat(), last.isoformat(),
        json.loads(schedule.filters), formula_guard=formula_guard, compression=schedule.compression,
    )  # fmt: skip


def fire_due(conn: sqlite3.Connection, settings: Settings, now: float | None = None) -> list[str]:
    """Start every run that is due (once per schedule, however many slots were missed), and
    any run a dead process claimed but never started; the ids of the jobs created."""
    now = time.time() if now is None else now
    started: list[str] = []
    for run in store.orphan_runs(conn, now - ORPHAN_SECONDS):
        if store.retake_run(conn, run, now):
            started += _start(conn, settings, run, now)
    for schedule in store.due_schedules(conn, now):
        site = get_site(conn, schedule.site_id)
        following = cadence_of(schedule).next_run(datetime.fromtimestamp(now, UTC), ZoneInfo(site.timezone))
        claimed = store.claim_slot(conn, schedule, now, following.timestamp())
        if claimed is not None:
            started += _start(conn, settings, claimed, now)
    return started


def run_now(conn: sqlite3.Connection, settings: Settings, schedule: store.Schedule) -> store.Run:
    """A run at once, outside the cadence; its job id (or its error) is on the run returned."""
    now = time.time()
    run = store.add_run(conn, schedule, now)
    _start(conn, settings, run, now)
    return store.get_run(conn, run.id)


def _start(conn: sqlite3.Connection, settings: Settings, run: store.Run, now: float) -> list[str]:
    schedule = store.schedule_by_rowid(conn, run.schedule_id)
    try:
        site = get_site(conn, schedule.site_id)
        req = request_of(schedule, site.timezone, now, formula_guard=settings.csv_formula_guard)
        limit = settings.query_timeout_seconds
        deadline = Deadline(limit, f"the schedule's estimate took longer than {limit:g} s")
        max_rows = settings.plans[site.account.plan].max_rows
        est = engine.estimate_within(
            conn, req, deadline, settings.sync_row_limit, max_rows, bound_on_timeout=True
        )
        job = lifecycle.create_job(conn, settings, site, req, est)
    except SealExportsError as e:  # over a plan limit, the site gone: the run says why
        store.finish_run(conn, run, error=e.message)
        log.warning("schedule %s: run not started: %s", schedule.schedule_id, e.message)
        return []
    store.finish_run(conn, run, job_id=job.job_id)
    log.info("schedule %s: export job %s started", schedule.schedule_id, job.job_id)
    return [job.job_id]


def deliver_files(conn: sqlite3.Connection, settings: Settings, owner: str, now: float | None = None) -> int:
    """Copy the finished files of runs whose schedule has a deliver_to_dir, with their manifests
    (`<file>.manifest.json`), each written to a temporary name then renamed; how many."""
    now = time.time() if now is None else now
    done = 0
    for run, schedule in store.runs_to_copy(conn, now):
        if not store.claim_copy(conn, run, owner, now, now + COPY_LEASE_SECONDS):
            continue
        job = export_jobs.get_job(conn, run.job_id or "")
        site = get_site(conn, schedule.site_id)
        req = request_for(job)
        folder = Path(schedule.deliver_to_dir or "")
        try:
            _copy(settings.exports_dir / (job.file_name or ""), folder / req.file_name)
            manifest.write(
                folder / f"{req.file_name}.manifest.json", manifest.of_job(req, site.timezone, job)
            )
        except OSError as e:
            store.copied(conn, run, error=f"could not copy to {folder}: {e.strerror or e}")
            log.warning("schedule %s: could not copy to %s: %s", schedule.schedule_id, folder, e)
            continue
        store.copied(conn, run)
        done += 1
    return done


def _copy(source: Path, dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
