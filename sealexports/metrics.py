"""Prometheus metrics: counters this process keeps, and gauges read from the database.

Counters (requests, rows and bytes exported, job durations, events ingested) count what this
process did since it started; Prometheus handles their resets. Job states and the queue's depth
are read from the database at each scrape, so they are right however many processes (`serve`,
`worker`) share it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sealexports.storage.export_jobs import Status, count_by_status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# No *_created series: they double the output and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
PROCESS = CollectorRegistry()
ProcessCollector(registry=PROCESS)
requests = Counter(
    "sealexports_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=PROCESS,
)
rows_exported = Counter(
    "sealexports_exported_rows", "Rows written to export files.", ["type", "format"], registry=PROCESS
)
bytes_exported = Counter(
    "sealexports_exported_bytes", "Bytes written to export files.", ["type", "format"], registry=PROCESS
)
jobs_finished = Counter(
    "sealexports_export_jobs_finished",
    "Export jobs that finished here, by outcome (completed, failed).",
    ["status"],
    registry=PROCESS,
)
job_seconds = Histogram(
    "sealexports_export_job_duration_seconds",
    "Time from a worker taking an export job to its file being ready.",
    ["type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=PROCESS,
)
events_ingested = Counter(
    "sealexports_events_ingested",
    "Events received by POST /api/v1/events, by outcome (accepted, duplicate, rejected).",
    ["outcome"],
    registry=PROCESS,
)


def export_done(export_type: str, fmt: str, rows: int, size: int, seconds: float) -> None:
    rows_exported.labels(export_type, fmt).inc(rows)
    bytes_exported.labels(export_type, fmt).inc(size)
    job_seconds.labels(export_type).observe(seconds)
    jobs_finished.labels("completed").inc()


def export_failed(export_type: str) -> None:
    jobs_finished.labels("failed").inc()


def events_received(accepted: int, duplicates: int, rejected: int) -> None:
    for outcome, n in (("accepted", accepted), ("duplicate", duplicates), ("rejected", rejected)):
        if n:
            events_ingested.labels(outcome).inc(n)


class DatabaseCollector(Collector):
    """Job states and queue depth, from the export_jobs table at scrape time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts = count_by_status(self.conn)
        jobs = GaugeMetricFamily(
            "sealexports_export_jobs", "Export jobs in the database, by status.", labels=["status"]
        )
        for status in Status:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "sealexports_queue_depth",
            "Export jobs waiting for a worker (status pending).",
            value=counts.get(Status.PENDING, 0),
        )


def scrape(conn: sqlite3.Connection) -> bytes:
    """The exposition text: this process's counters, then the database's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(conn))
    return generate_latest(PROCESS) + generate_latest(registry)
