"""The API docs page (/schema): Swagger UI from files shipped in the package, not a CDN.

A server without outbound access, or a user who cannot reach a CDN, still gets a working page,
and the script that runs where users type their API keys is the one pinned here
(swagger-ui-dist 5.35.0 from npm; `scripts/vendor-docs-assets` refreshes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.constants import OPENAPI_JSON_HANDLER_NAME
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

ASSETS = Path(__file__).with_name("docs_assets")
SWAGGER_UI_VERSION = "5.35.0"


class LocalSwaggerPlugin(SwaggerRenderPlugin):
    """Swagger UI whose script, preset, stylesheet and icon come from `<docs path>/assets/`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(version=SWAGGER_UI_VERSION, **kwargs)

    @staticmethod
    def get_openapi_json_route(request: Request[Any, Any, Any]) -> str:
        """Under a path prefix (root_path), the schema and the assets are under it too."""
        return str(request.scope.get("root_path", "")) + request.app.route_reverse(OPENAPI_JSON_HANDLER_NAME)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        # Beside /schema/openapi.json, wherever the docs are mounted.
        base = self.get_openapi_json_route(request).rsplit("/", 1)[0] + "/assets"
        self.js_url = f"{base}/swagger-ui-bundle.js"
        self.standalone_preset_js_url = f"{base}/swagger-ui-standalone-preset.js"
        self.css_url = f"{base}/swagger-ui.css"
        self.favicon = f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>"
        return super().render(request, openapi_schema)

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(
            create_static_files_router(
                "/assets",
                directories=[ASSETS],
                name="docs_assets",
                cache_control=CacheControlHeader(max_age=86_400, public=True),
                include_in_schema=False,
            )
        )
