"""The one huey instance (SQLite storage, a sibling file of the database), its tasks, the consumer
that runs them in threads inside the host process (uvicorn, `sealexports worker`), and the lease
keeper that lets several such processes share one database.

huey is at-most-once (a task leaves the queue before it runs) and first-in first-out. So the
export_jobs table is the truth and huey only rings a doorbell: a `run_export` task makes a
worker claim the next pending job in the fair order (by account), whichever job that is. Every
few seconds each process renews the leases of its running jobs, takes back jobs whose lease ran
out (their process died), and rings a doorbell for pending jobs that have none.

Processes that run workers also run the dispatcher: a thread that, every second, starts the
schedules' runs that are due (each claimed by one process), copies finished scheduled files to
their folders, and sends the webhook deliveries that are due (claimed under a lease, like jobs).
"""

from __future__ import annotations

import logging
import threading
import time

from huey import SqliteHuey, crontab
from huey.consumer import Consumer

from sealexports.config import Settings
from sealexports.jobs.leases import Lease
from sealexports.jobs.lifecycle import expire_jobs
from sealexports.jobs.runner import reclaim, run_next
from sealexports.schedules import runs
from sealexports.storage import export_jobs
from sealexports.storage.database import connect, make_private_file
from sealexports.storage.deadline import Deadline
from sealexports.tokens import DownloadTokens
from sealexports.webhooks import outbox

log = logging.getLogger(__name__)
DISPATCH_SECONDS = 1.0  # how often the dispatcher looks for due webhook deliveries


class EmbeddedConsumer(Consumer):  # type: ignore[misc]
    """A consumer inside another program: the host owns the signal handlers (huey's would
    replace uvicorn's, or raise outside the main thread)."""

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    def __init__(
        self, settings: Settings, tokens: DownloadTokens, stopping: threading.Event | None = None
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.lease = Lease(float(settings.job_lease_seconds))
        self.stopping = stopping or threading.Event()  # set: running exports go back to pending
        self._halt = threading.Event()
        make_private_file(settings.queue_path)  # pickled tasks: nobody else may read or write them
        self.huey = SqliteHuey("sealexports", filename=str(settings.queue_path), timeout=30)
        # Task names are part of the queue's stored data: keep them stable across releases.
        self._run_export = self.huey.task(name="run_export")(self._run)
        self.huey.periodic_task(crontab(minute="*"), name="expire_exports")(self.expire)
        self._consumer: EmbeddedConsumer | None = None
        self._keeper: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None

    def enqueue(self, job_id: str) -> None:
        """Ring the doorbell for a new pending job (the id only shows in huey's logs)."""
        self._run_export(job_id)

    def _run(self, job_id: str) -> None:
        conn = connect(self.settings.database, migrate=False)
        try:
            limit = self.settings.job_timeout_seconds
            deadline = Deadline(
                limit,
                f"the export took longer than {limit:g} s (job_timeout_seconds) and was stopped; "
                "narrow the date range or the filters",
                shutdown=self.stopping,
            )
            run_next(
                conn,
                self.settings.exports_dir,
                self.tokens,
                self.lease,
                self.stopping,
                deadline,
                formula_guard=self.settings.csv_formula_guard,
            )
        finally:
            conn.close()

    def expire(self) -> int:
        """The periodic sweep; quiet (debug) when nothing was due."""
        conn = connect(self.settings.database, migrate=False)
        try:
            expired = expire_jobs(conn, self.settings.exports_dir)
        finally:
            conn.close()
        log.log(logging.INFO if expired else logging.DEBUG, "expiry sweep: %d export(s) expired", expired)
        return expired

    def check(self, now: float | None = None) -> list[str]:
        """The lease keeper's round: renew this process's leases, take back lapsed jobs, and
        ring a doorbell for every pending job beyond the doorbells already queued (an extra
        one finds nothing to claim and costs nothing). Returns the ids taken back."""
        now = time.time() if now is None else now
        conn = connect(self.settings.database, migrate=False)
        try:
            export_jobs.renew_leases(conn, self.lease.owner, self.lease.until(now))
            back = reclaim(conn, self.settings.exports_dir, now, stray_after=self.lease.seconds)
            pending = export_jobs.pending_ids(conn)
        finally:
            conn.close()
        for job_id in pending[: max(0, len(pending) - self.huey.pending_count())]:
            self.enqueue(job_id)
        return back

    def _keep(self) -> None:
        while not self._halt.wait(self.lease.heartbeat_seconds):
            try:
                self.check()
            except Exception:  # a busy or failing disk: try again at the next round
                log.exception("lease check failed")

    def dispatch(self) -> int:
        """Start due schedule runs (ringing their doorbells), copy finished scheduled files, then
        send the webhook deliveries that are due, one at a time until none is (or the process
        stops); how many delivery attempts were made."""
        conn = connect(self.settings.database, migrate=False)
        try:
            for job_id in runs.fire_due(conn, self.settings):
                self.enqueue(job_id)
            runs.deliver_files(conn, self.settings, self.lease.owner)
            sent = 0
            while not self._halt.is_set() and outbox.deliver_due(
                conn, self.settings, self.lease.owner, limit=1
            ):
                sent += 1
            return sent
        finally:
            conn.close()

    def _dispatch(self) -> None:
        while not self._halt.wait(DISPATCH_SECONDS):
            try:
                self.dispatch()
            except Exception:  # a busy or failing disk: try again at the next round
                log.exception("webhook dispatch failed")

    def start(self, *, workers: bool = True) -> None:
        """Take back lapsed jobs, start the lease keeper, then (with `workers`) the worker
        threads and the periodic scheduler. Without workers, the process still keeps the leases
        of the small exports it runs during requests."""
        self.check()
        conn = connect(self.settings.database, migrate=False)
        try:
            expire_jobs(conn, self.settings.exports_dir)
        finally:
            conn.close()
        self.stopping.clear()
        self._halt.clear()
        self._keeper = threading.Thread(target=self._keep, name="sealexports-leases", daemon=True)
        self._keeper.start()
        if workers:
            self._consumer = EmbeddedConsumer(
                self.huey,
                workers=self.settings.workers,
                periodic=True,
                initial_delay=0.05,
                max_delay=1.0,  # huey's default of 10 s would make a new job wait that long
                check_worker_health=False,
            )
            self._consumer.start()
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="sealexports-dispatch", daemon=True
            )
            self._dispatcher.start()

    def stop(self) -> None:
        """Running exports stop at their next chunk and go back to pending; then the threads
        end, and the jobs put back get doorbells, for another process (or the next start)."""
        self.stopping.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
        self._halt.set()
        for thread in (self._keeper, self._dispatcher):
            if thread is not None:
                thread.join()
        self._keeper = self._dispatcher = None
        try:
            self.check()
        except Exception as e:  # the database is gone or failing: the next start will see to it
            log.warning("could not check leases at shutdown: %s", e)
