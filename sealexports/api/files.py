"""Answers that carry a finished export file: whole (200), a byte range (206), or nothing new
(304), with its validators. `conditional` decides which; this module only sends it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from litestar import Request, Response
from litestar.app import Litestar
from litestar.enums import HttpMethod
from litestar.response import File, Stream
from litestar.response.file import ASGIFileResponse

from sealexports.api.conditional import Representation, plan
from sealexports.storage.export_jobs import JobRecord
from sealexports.storage.timestamps import parse_iso

CHUNK_BYTES = 256 * 1024


class ExportFile(File):
    """A file response that, for HEAD, sends the headers (Content-Length included) and never
    reads the file (Litestar's File would read it all for the server to throw away)."""

    def to_asgi_response(
        self, app: Litestar | None, request: Request[Any, Any, Any], **kwargs: Any
    ) -> ASGIFileResponse:
        if request.method == HttpMethod.HEAD:
            kwargs["is_head_response"] = True
            media_type = str(self.media_type)  # Litestar leaves Content-Type out of HEAD answers
            self.headers.setdefault("content-type", _content_type(media_type))
        return super().to_asgi_response(app, request, **kwargs)


def _content_type(media_type: str) -> str:
    return f"{media_type}; charset=utf-8" if media_type.startswith("text/") else media_type


def representation(job: JobRecord, path: Path) -> Representation:
    """The validators of a completed job's file: its size on disk, the SHA-256 recorded when it
    was written (computed now for a file written before that was recorded), its completion time."""
    size = path.stat().st_size
    sha256 = job.sha256 or _sha256(path)
    done = job.completed_at or job.created_at
    modified = parse_iso(done)
    return Representation(size=size, sha256=sha256, modified=modified)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def file_response(
    request: Request[Any, Any, Any], path: Path, filename: str, media_type: str, rep: Representation
) -> Response[Any]:
    """The answer to a GET or HEAD of an export file, by its request's conditional headers."""
    method = "HEAD" if request.method == HttpMethod.HEAD else "GET"
    p = plan(method, {k.lower(): v for k, v in request.headers.items()}, rep)
    if p.status == 304:
        return Response(content=b"", status_code=304, headers=p.headers)
    if p.status == 200:
        return ExportFile(
            path=path,
            filename=filename,
            media_type=media_type,
            content_disposition_type="attachment",
            headers=p.headers,
        )
    return Stream(
        _slice(path, p.start, p.length),
        status_code=206,
        media_type=media_type,
        headers={**p.headers, "content-disposition": f'attachment; filename="{filename}"'},
    )


async def _slice(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    """`length` bytes of `path` from `start`, a chunk at a time."""
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        left = length
        while left > 0:
            chunk = await f.read(min(CHUNK_BYTES, left))
            if not chunk:  # the file shrank under us: never pad, the client sees a short body
                return
            left -= len(chunk)
            yield chunk
