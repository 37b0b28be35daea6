"""An export file's manifest: what was asked, what the file holds and how to check it.

Built here once for both shells (GET /exports/{job_id}/manifest and `export --manifest FILE`), so
a tool can verify a file the same way whichever way it was made: its size and SHA-256, its row
count (data rows, the header not counted), its columns and their types.

Freshness is `latest_event_at`: the time of the site's newest event (page view, conversion or
microconversion) on the export's days when its generation began, whatever the filters (finding the
newest event that passes them would cost a second export).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealexports.errors import Conflict
from sealexports.exports.request import ExportRequest
from sealexports.exports.types import Column
from sealexports.storage.export_jobs import JobRecord

VERSION = 1
FRESHNESS_SCOPE = "the site's newest event on the export's days when generation began (filters not applied)"
# The type each column's values have, in every format (CSV holds them as text).
_TYPES = {"text": "string", "int": "integer", "dec2": "decimal", "json": "json"}
_BY_NAME = {"date": "date", "timestamp": "timestamp"}  # ISO 8601: YYYY-MM-DD, ...THH:MM:SSZ (UTC)


@dataclass(frozen=True)
class Produced:
    """What writing the file found: its bytes, rows, digest, and when."""

    file_name: str
    rows: int
    size_bytes: int
    sha256: str
    generated_at: str  # UTC, ISO 8601
    latest_event_at: str | None


def column_type(column: Column) -> dict[str, Any]:
    kind = _BY_NAME.get(column.name) or _TYPES.get(column.kind, column.kind)
    out: dict[str, Any] = {"name": column.name, "type": kind}
    if kind == "decimal":
        out["scale"] = 2
    return out


def build(
    req: ExportRequest, timezone: str, produced: Produced, *, job_id: str | None = None
) -> dict[str, Any]:
    """The manifest as a JSON-ready dict (keys in a fixed order)."""
    request = {
        "site_id": req.site_id,
        "export_type": req.type.name,
        "date_from": req.date_from.isoformat(),
        "date_to": req.date_to.isoformat(),
        "filters": dict(req.filters),
        "format": req.format,
        "compression": req.compression,
    }
    return {
        "manifest_version": VERSION,
        "job_id": job_id,
        "request": request,
        "timezone": timezone,
        "file": {
            "name": produced.file_name,
            "media_type": req.media_type,
            "size_bytes": produced.size_bytes,
            "sha256": produced.sha256,
            "rows": produced.rows,
        },
        "columns": [column_type(c) for c in req.type.columns],
        "generated_at": produced.generated_at,
        "freshness": {
            "latest_event_at": produced.latest_event_at,
            "scope": FRESHNESS_SCOPE,
        },
    }


def of_job(req: ExportRequest, timezone: str, job: JobRecord) -> dict[str, Any]:
    """A job's manifest (`req` is the job's request). It describes the file the job wrote, so it
    stays once the link has expired; a job that wrote no file has none (Conflict)."""
    if job.status not in ("completed", "expired") or job.sha256 is None:
        raise Conflict(f"the export is {job.status}: a manifest exists once it has completed")
    produced = Produced(
        file_name=req.file_name,
        rows=job.actual_rows or 0,
        size_bytes=job.file_size_bytes or 0,
        sha256=job.sha256,
        generated_at=job.completed_at or job.created_at,
        latest_event_at=job.latest_event_at,
    )
    return build(req, timezone, produced, job_id=job.job_id)


def dumps(manifest: dict[str, Any]) -> str:
    """As written to a file: indented, one trailing newline."""
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def write(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest to `path` whole or not at all (a temporary file, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(manifest))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it: put it back at once
    os.umask(mask)
    return mask
