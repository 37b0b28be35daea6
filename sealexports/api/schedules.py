"""/api/v1/schedules?site_id=S: a site's recurring exports (any read key that works on the site)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from msgspec import Meta

from sealexports.api import openapi
from sealexports.errors import InvalidRequest
from sealexports.schedules import runs
from sealexports.services import Services
from sealexports.storage import schedules as store
from sealexports.storage.accounts import Account, Site, site_for

SiteId = Annotated[str, Parameter(description="The site (its slug).")]
ScheduleId = Annotated[str, Parameter(description="The schedule's id (sch_...).")]


class ScheduleIn(msgspec.Struct, forbid_unknown_fields=True):
    export_type: str
    range: Annotated[str, Meta(description="yesterday, last_7_days, last_30_days, previous_week, "
                                           "previous_month or month_to_date")]  # fmt: skip
    every: Annotated[str, Meta(description="daily, weekly or monthly.")]
    at: Annotated[str, Meta(description="HH:MM in the site's time zone.")]
    day: Annotated[str | int | None, Meta(description="weekly: mon..sun; monthly: 1..31.")] = None
    format: str = "csv"
    compression: Annotated[str | None, Meta(description="none (default), gzip or zstd.")] = None
    filters: dict[str, Any] | None = None
    deliver_to_dir: Annotated[str | None, Meta(description="A folder on the server to copy files to.")] = None


class ScheduleOut(msgspec.Struct):
    id: str
    site_id: str
    export_type: str
    format: str
    compression: str
    filters: dict[str, Any]
    range: str
    every: str
    at: str
    day: int | None
    deliver_to_dir: str | None
    next_run_at: Annotated[str, Meta(description="UTC, ISO 8601.")]
    next_run_local: Annotated[str, Meta(description="The same instant in the site's time zone.")]
    last_job_id: str | None
    created_at: str


class SchedulesOut(msgspec.Struct):
    schedules: list[ScheduleOut]


class RunOut(msgspec.Struct):
    job_id: str
    site_id: str


def provide_site(
    site_id: SiteId, account: NamedDependency[Account], services: NamedDependency[Services]
) -> Site:
    """The `site` dependency: the site the query names, if the key may use it."""
    return site_for(services.db.get(), site_id, account)


def provide_schedule(
    schedule_id: ScheduleId, site: NamedDependency[Site], services: NamedDependency[Services]
) -> store.Schedule:
    """The `schedule` dependency: the site's schedule the path names."""
    return store.get_schedule(services.db.get(), schedule_id, site_id=site.site_id)


def _out(services: Services, site: Site, s: store.Schedule) -> ScheduleOut:
    at = datetime.fromtimestamp(s.next_run_at, UTC)
    last = store.runs_of(services.db.get(), s, limit=1)
    return ScheduleOut(
        s.schedule_id, s.site_id, s.export_type, s.format, s.compression, json.loads(s.filters), s.range,
        s.every, s.at,
        s.day, s.deliver_to_dir, at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        at.astimezone(ZoneInfo(site.timezone)).isoformat(), last[0].job_id if last else None, s.created_at,
    )  # fmt: skip


class SchedulesController(Controller):
    path = "/api/v1/schedules"
    tags = ("schedules",)
    # Reads: provided on a worker thread.
    dependencies = {  # noqa: RUF012 (Litestar's own pattern)
        "site": Provide(provide_site, sync_to_thread=True),
        "schedule": Provide(provide_schedule, sync_to_thread=True),
    }

    @get("/", sync_to_thread=True, summary="List a site's schedules", operation_id="listSchedules",
         responses=openapi.SCHEDULE)  # fmt: skip
    def list(self, site: NamedDependency[Site], services: NamedDependency[Services]) -> SchedulesOut:
        """The site's recurring exports, with their next run."""
        return SchedulesOut(
            [_out(services, site, s) for s in store.list_schedules(services.db.get(), site_id=site.site_id)]
        )

    @post("/", status_code=201, sync_to_thread=True, summary="Add a schedule", operation_id="createSchedule",
          responses=openapi.SCHEDULE_CREATE)  # fmt: skip
    def create(
        self,
        data: JSONBody[ScheduleIn],
        site: NamedDependency[Site],
        services: NamedDependency[Services],
    ) -> ScheduleOut:
        """A new schedule: each run an ordinary export job, with the same limits and webhooks."""
        conn = services.db.get()
        if data.deliver_to_dir is not None:  # a key may not choose where the server writes
            raise InvalidRequest(
                "deliver_to_dir writes on the server's disk: only the operator sets it "
                "(sealexports schedules add --deliver-to-dir DIR)",
                field="deliver_to_dir",
            )
        schedule = runs.add(
            conn, site, export_type=data.export_type, fmt=data.format, compression=data.compression,
            filters=data.filters,
            range_name=data.range, every=data.every, at=data.at, day=data.day,
            deliver_to_dir=data.deliver_to_dir,
        )  # fmt: skip
        return _out(services, site, schedule)

    @delete("/{schedule_id:str}", status_code=204, sync_to_thread=True, summary="Remove a schedule",
            operation_id="deleteSchedule", responses=openapi.SCHEDULE)  # fmt: skip
    def remove(self, schedule: NamedDependency[store.Schedule], services: NamedDependency[Services]) -> None:
        """The schedule goes; the jobs it made stay."""
        store.remove_schedule(services.db.get(), schedule)

    @post("/{schedule_id:str}/run", status_code=202, sync_to_thread=True, summary="Run a schedule now",
          operation_id="runSchedule", responses=openapi.SCHEDULE)  # fmt: skip
    def run(self, schedule: NamedDependency[store.Schedule], services: NamedDependency[Services]) -> RunOut:
        """A run at once (a pending export job: poll GET /exports/{job_id}); the cadence is unchanged."""
        run = runs.run_now(services.db.get(), services.settings, schedule)
        if run.job_id is None:
            raise InvalidRequest(run.error or "the run did not start")
        services.queue.enqueue(run.job_id)
        return RunOut(run.job_id, schedule.site_id)
