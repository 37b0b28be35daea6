"""What the handlers share: settings, per-thread connections, download tokens, the job queue."""

from __future__ import annotations

from dataclasses import dataclass

from sealexports.config import Settings
from sealexports.jobs.queue import JobQueue
from sealexports.storage.database import ConnectionPerThread
from sealexports.tokens import DownloadTokens


@dataclass
class Services:
    settings: Settings
    db: ConnectionPerThread
    tokens: DownloadTokens
    queue: JobQueue

    def download_url(self, token: str, base: str) -> str:
        """The link under `base` (public_url, or the reading request's own base URL)."""
        return f"{base}/api/v1/exports/download/{token}"
