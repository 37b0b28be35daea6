"""A job as clients see it: the object GET /exports/{job_id} answers and webhooks carry."""

from __future__ import annotations

import json
from typing import Any

from sealexports.exports.engine import human_size
from sealexports.storage.export_jobs import JobRecord


def download_url(token: str, base: str) -> str:
    """The link under `base` (public_url, or the reading request's own base URL)."""
    return f"{base}/api/v1/exports/download/{token}"


def job_object(job: JobRecord, base: str) -> dict[str, Any]:
    """The job's public fields; its download_url (while completed) under `base`."""
    completed = job.status == "completed" and job.download_token
    expired = job.status == "expired"
    return {
        "id": job.id,
        "job_id": job.job_id,
        "site_id": job.site_id,
        "export_type": job.export_type,
        "format": job.format,
        "compression": job.compression,
        "date_from": job.date_from,
        "date_to": job.date_to,
        "filters": json.loads(job.filters),
        "status": job.status,
        "estimated_rows": job.estimated_rows,
        "actual_rows": job.actual_rows,
        "file_size_bytes": job.file_size_bytes,
        "file_size_human": None if job.file_size_bytes is None else human_size(job.file_size_bytes),
        "progress_percent": job.progress_percent,
        "download_url": download_url(job.download_token, base) if completed and job.download_token else None,
        # Kept once expired: when the link stopped working.
        "download_expires_at": job.download_expires_at if completed or expired else None,
        "error_message": job.error_message,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "created_at": job.created_at,
    }


def from_snapshot(snapshot: str) -> JobRecord:
    """The job row a trigger saved as JSON when the job finished."""
    values = json.loads(snapshot)
    return JobRecord(**{k: v for k, v in values.items() if k in JobRecord.__dataclass_fields__})
