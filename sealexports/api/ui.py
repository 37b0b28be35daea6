"""The web page: `/ui` (and `/` redirecting to it) and its assets under `/ui/static`, all from
the package (no build step, no CDN), under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.response import File, Redirect
from litestar.static_files import create_static_files_router

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# Only this origin's own files; no inline script or style; never framed.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _secure(response: Response[Any]) -> Response[Any]:
    response.headers.update(HEADERS)
    return response


@get("/", include_in_schema=False)
async def root(request: Request[Any, Any, Any]) -> Redirect:
    """The page lives at /ui (under the path prefix, if any)."""
    return Redirect(f"{request.scope.get('root_path', '')}/ui", status_code=302)


@get("/ui", include_in_schema=False, after_request=_secure)
async def page() -> File:
    return File(
        UI_DIR / "index.html",
        filename="index.html",
        media_type="text/html",
        content_disposition_type="inline",
    )


def routers() -> list[Any]:
    """Handlers to add to the app."""
    static: Router = create_static_files_router(
        path="/ui/static", directories=[UI_DIR], name="ui-static", after_request=_secure
    )
    return [root, page, static]
