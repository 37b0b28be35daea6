"""GET /api/v1/sites and GET /api/v1/sites/{site_id}/values: what a key may export, for pickers."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from msgspec import Meta

from sealexports.api import openapi
from sealexports.exports import values
from sealexports.services import Services
from sealexports.storage.accounts import Account, site_for


class SiteOut(msgspec.Struct):
    site_id: Annotated[str, Meta(description="The site's slug, as site_id in every export call.")]
    name: Annotated[str, Meta(description="The site's name.")]
    timezone: Annotated[str, Meta(description="IANA time zone: export dates are its local days.")]
    first_day: Annotated[str | None, Meta(description="First day with data (YYYY-MM-DD); null if none.")]
    last_day: Annotated[str | None, Meta(description="Last day with data (YYYY-MM-DD); null if none.")]


class SitesOut(msgspec.Struct):
    sites: Annotated[list[SiteOut], Meta(description="The sites this key may export from.")]


class ValueOut(msgspec.Struct):
    value: Annotated[str, Meta(description="A value the key takes.")]
    count: Annotated[int, Meta(description="How often it occurs in the range (see `unit`).")]


class ValuesOut(msgspec.Struct):
    key: Annotated[str, Meta(description="The filter key.")]
    date_from: Annotated[str, Meta(description="First day counted.")]
    date_to: Annotated[str, Meta(description="Last day counted.")]
    unit: Annotated[str, Meta(description="What `count` counts: visits, page views or events.")]
    values: Annotated[list[ValueOut], Meta(description="Most frequent first.")]
    truncated: Annotated[bool, Meta(description="True if more values occur than were returned.")]


class SitesController(Controller):
    path = "/api/v1/sites"
    tags = ("sites",)

    @get(
        "/",
        sync_to_thread=True,
        summary="List the key's sites",
        operation_id="listSites",
        responses=openapi.SITES,
    )
    def sites(self, account: NamedDependency[Account], services: NamedDependency[Services]) -> SitesOut:
        """The sites the key works on (its one site, or every site of its account), with their time
        zone and the days their data spans."""
        found = values.key_sites(services.db.get(), account)
        return SitesOut([SiteOut(s.site_id, s.name, s.timezone, d.first_day, d.last_day) for s, d in found])

    @get(
        "/{site_id:str}/values",
        sync_to_thread=True,
        summary="Values a filter key takes",
        operation_id="listFilterValues",
        responses=openapi.VALUES,
    )
    def filter_values(
        self,
        site_id: Annotated[str, Parameter(description="The site (its slug).")],
        key: Annotated[str, Parameter(description="A filter key, e.g. country or utm_source.")],
        account: NamedDependency[Account],
        services: NamedDependency[Services],
        date_from: Annotated[
            str | None, Parameter(description="First day (default: first with data).")
        ] = None,
        date_to: Annotated[str | None, Parameter(description="Last day (default: last with data).")] = None,
        limit: Annotated[int, Parameter(ge=1, le=values.MAX_LIMIT, description="At most this many.")] = 100,
    ) -> ValuesOut:
        """The values `key` takes on the site over the range, most frequent first, with counts."""
        conn = services.db.get()
        site = site_for(conn, site_id, account)
        start, end, found = values.site_values(conn, site, key, date_from, date_to, limit=limit)
        return ValuesOut(
            key=found.key,
            date_from=start.isoformat(),
            date_to=end.isoformat(),
            unit=found.unit,
            values=[ValueOut(v, n) for v, n in found.values],
            truncated=found.truncated,
        )
