"""What every shell shares (`serve`'s handlers, `worker`, tests): settings, per-thread
connections, download tokens and the job queue, built by one function."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

from sealexports.config import Settings
from sealexports.jobs.queue import JobQueue
from sealexports.storage.database import ConnectionPerThread, make_private_dir, secret_key
from sealexports.tokens import DownloadTokens


@dataclass
class Services:
    settings: Settings
    db: ConnectionPerThread
    tokens: DownloadTokens
    queue: JobQueue


def build_services(
    settings: Settings, conn: sqlite3.Connection, stopping: threading.Event | None = None
) -> Services:
    """The services over the database `conn` opens (at the current schema; the caller closes
    it). The signing secret is the configured one, else the database's own. Setting `stopping`
    stops every running query and export."""
    secret = settings.configured_secret() or secret_key(conn)
    make_private_dir(settings.exports_dir)
    tokens = DownloadTokens(secret, settings.download_ttl_seconds)
    return Services(
        settings, ConnectionPerThread(settings.database), tokens, JobQueue(settings, tokens, stopping)
    )
