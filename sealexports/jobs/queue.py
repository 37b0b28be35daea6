"""The one huey instance (SQLite storage, a sibling file of the database), its tasks, and the
consumer that runs them in threads inside the host process (uvicorn, `sealexports worker`).

huey is at-most-once: a task leaves the queue before it runs. The export_jobs table is the
truth, so `start()` first puts back every job a crash or restart left unfinished.
"""

from __future__ import annotations

import logging
import threading

from huey import SqliteHuey, crontab
from huey.consumer import Consumer

from sealexports.config import Settings
from sealexports.jobs.lifecycle import expire_jobs
from sealexports.jobs.runner import recover, run_export
from sealexports.storage.database import connect, make_private_file
from sealexports.storage.deadline import Deadline
from sealexports.tokens import DownloadTokens

log = logging.getLogger(__name__)


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
        self.stopping = stopping or threading.Event()  # set: running exports go back to pending
        make_private_file(settings.queue_path)  # pickled tasks: nobody else may read or write them
        self.huey = SqliteHuey("sealexports", filename=str(settings.queue_path), timeout=30)
        # Task names are part of the queue's stored data: keep them stable across releases.
        self._run_export = self.huey.task(name="run_export")(self._run)
        self.huey.periodic_task(crontab(minute="*"), name="expire_exports")(self.expire)
        self._consumer: EmbeddedConsumer | None = None

    def enqueue(self, job_id: str) -> None:
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
            run_export(
                conn,
                self.settings.exports_dir,
                self.tokens,
                job_id,
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

    def start(self) -> None:
        """Put back unfinished jobs, then start the worker threads and the periodic scheduler."""
        conn = connect(self.settings.database)
        try:
            for job_id in recover(conn, self.settings.exports_dir):
                self.enqueue(job_id)
            expire_jobs(conn, self.settings.exports_dir)
        finally:
            conn.close()
        self.stopping.clear()
        self._consumer = EmbeddedConsumer(
            self.huey,
            workers=self.settings.workers,
            periodic=True,
            initial_delay=0.05,
            max_delay=1.0,  # huey's default of 10 s would make a new job wait that long
            check_worker_health=False,
        )
        self._consumer.start()

    def stop(self) -> None:
        """Running exports stop at their next chunk and go back to pending; then the threads end."""
        self.stopping.set()
        if self._consumer is not None:
            self._consumer.stop(graceful=True)
            self._consumer = None
