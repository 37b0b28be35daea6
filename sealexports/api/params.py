"""Query parameters several controllers share, and the site they name."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.di import NamedDependency
from litestar.params import Parameter

from sealexports.api.auth import check, required_key
from sealexports.api.threads import read
from sealexports.errors import InvalidRequest
from sealexports.services import Services
from sealexports.storage.accounts import Site, site_for

SiteId = Annotated[str | None, Parameter(description="The site (its slug).", required=False)]
AccountId = Annotated[
    str | None,
    Parameter(description="Same as site_id, as newer clients send it.", required=False),
]


def site_slug(site_id: str | None, account_id: str | None) -> str:
    """The slug a request names (site_id, or account_id as newer clients send it)."""
    slug = site_id or account_id
    if not slug:
        raise InvalidRequest("site_id is required (as a query parameter)", field="site_id")
    if site_id and account_id and site_id != account_id:
        raise InvalidRequest(
            f"site_id {site_id!r} and account_id {account_id!r} name different sites: give one",
            field="account_id",
        )
    return slug


async def provide_site(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    site_id: SiteId = None,
    account_id: AccountId = None,
) -> Site:
    """The site the request names, if the key may use it: the `site` dependency, whose query
    parameters (site_id, account_id) every handler taking it documents. The key and the site are
    read together, on one reader thread."""
    key = required_key(request.scope)
    return await read(lambda: site_of(services, key, site_id, account_id))


def site_of(services: Services, key: str, site_id: str | None, account_id: str | None) -> Site:
    """The site a request names, if `key` may use it (a read, for a reader thread)."""
    account = check(services, key, "read")  # a bad key is a 401 before a missing site_id
    return site_for(services.db.get(), site_slug(site_id, account_id), account)
