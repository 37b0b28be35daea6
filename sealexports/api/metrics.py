"""GET /metrics: Prometheus text format, only when `metrics_token` is set, and only with
`Authorization: Bearer <metrics_token>` (401 otherwise). Unset, the route does not exist (404)."""

from __future__ import annotations

import hmac
from typing import Annotated

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter

from sealexports import metrics
from sealexports.errors import Unauthorized
from sealexports.services import Services


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def scrape(
    services: NamedDependency[Services],
    authorization: Annotated[str | None, HeaderParameter(name="Authorization", required=False)] = None,
) -> Response[bytes]:
    expected = f"Bearer {services.settings.metrics_token}".encode()
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
        raise Unauthorized("metrics need the header 'Authorization: Bearer <metrics_token>'")
    return Response(metrics.scrape(services.db.get()), media_type=metrics.CONTENT_TYPE)
