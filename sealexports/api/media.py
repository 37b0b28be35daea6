"""What every request body must be: JSON (NDJSON too on routes that say so)."""

from __future__ import annotations

from typing import Any

from litestar import Request

from sealexports.errors import UnsupportedMediaType


async def require_json(request: Request[Any, Any, Any]) -> None:
    """before_request hook: another declared Content-Type is a 415 (none at all is taken as JSON).
    Routes with `opt={"ndjson": True}` (POST /events) also take NDJSON."""
    if request.method == "POST":
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        takes_ndjson = bool(request.route_handler.opt.get("ndjson"))
        if takes_ndjson and media_type in ("application/x-ndjson", "application/ndjson"):
            return
        if media_type and media_type != "application/json" and not media_type.endswith("+json"):
            ndjson = " or application/x-ndjson" if takes_ndjson else ""
            raise UnsupportedMediaType(f"Content-Type must be application/json{ndjson}, got {media_type!r}")
