"""What the handlers share: settings, per-thread connections, download tokens, the job queue."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from sealexports.config import Settings
from sealexports.jobs import view
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
        return view.download_url(token, base)

    def job_url(self, job_id: str, site_id: str, base: str) -> str:
        """Where a client polls the job: GET answers 422 without the site in the query."""
        return f"{base}/api/v1/exports/{quote(job_id)}?{urlencode({'site_id': site_id})}"
