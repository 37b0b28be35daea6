"""http: status polls/s while two big exports run vs a bare Litestar route on the same uvicorn
setup; and, for information, the same polls while no export runs (ours-idle)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from benchmark.data import SITE
from benchmark.load import Load, load_test
from benchmark.run import Run, rotate

JOBS = f"/api/v1/exports?site_id={SITE}"


def job_path(job_id: str) -> str:
    return f"/api/v1/exports/{job_id}?site_id={SITE}"


def measure(run: Run, rep: int) -> None:
    contenders: list[tuple[str, Callable[[Run], None]]] = [
        ("ours", ours), ("ours-idle", ours_idle), ("bare", bare),
    ]  # fmt: skip
    for contender, fn in rotate(contenders, rep):
        run.attempt("http", contender, functools.partial(fn, run))
    run.progress("http", "ours", "ours-idle", "bare")


def ours(run: Run) -> None:
    """Polls of a job's status while two exports of every microconversion run."""
    body = {"export_type": "microconversions", "format": "csv",
            "date_from": run.data.date_from.isoformat(), "date_to": run.data.date_to.isoformat()}  # fmt: skip
    jobs = []
    try:
        for _ in range(2):
            jobs.append(start_job(run, body))
        before = wait_started(run, jobs)
        result = poll(run, job_path(jobs[0]))
        after = job_statuses(run, jobs)
    finally:
        for job in jobs:  # cancels a running export
            run.servers.api("DELETE", job_path(job))
    n_before, n_after = before.count("generating"), after.count("generating")
    running = f"exports generating before/after: {n_before}/{n_after} of 2"
    record(run, "ours", result, f"GET /api/v1/exports/{{job_id}}; {running}")


def ours_idle(run: Run) -> None:
    """Polls of a small job's status (one day of time_series: done during the POST)."""
    day = run.data.date_to.isoformat()
    job = start_job(run, {"export_type": "time_series", "format": "csv", "date_from": day, "date_to": day})
    try:
        result = poll(run, job_path(job))
    finally:
        run.servers.api("DELETE", job_path(job))
    record(run, "ours-idle", result, "GET /api/v1/exports/{job_id} with no export running")


def bare(run: Run) -> None:
    url = run.servers.get("bare").base + "/ping"
    result = load_test(url, {}, run.options.http_seconds, run.options.loadgen)
    record(run, "bare", result, "GET /ping", reference=True)


def start_job(run: Run, body: dict[str, str]) -> str:
    status, data = run.servers.api("POST", JOBS, body)
    if status != 201:
        raise RuntimeError(f"POST /exports: HTTP {status}: {data}")
    return str(data["job"]["job_id"])


def poll(run: Run, path: str) -> Load:
    url = run.servers.get("ours").base + path
    return load_test(url, {"X-API-Key": run.servers.api_key}, run.options.http_seconds, run.options.loadgen)


def job_statuses(run: Run, jobs: list[str]) -> list[str]:
    return [str(run.servers.api("GET", job_path(j))[1]["status"]) for j in jobs]


def wait_started(run: Run, jobs: list[str]) -> list[str]:
    """Wait (up to 60 s) until no job is pending or estimating; their statuses."""
    deadline = time.monotonic() + 60
    while True:
        statuses = job_statuses(run, jobs)
        if not {"pending", "estimating"} & set(statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.1)


def record(run: Run, contender: str, r: Load, what: str, *, reference: bool = False) -> None:
    note = f"{what}; p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms; {r.requests:,} requests ({r.tool})"
    err = f"{r.bad} bad responses or socket errors" if r.bad else None
    rps = r.requests_per_second
    run.results.add("http", contender, rps, unit="req/s", reference=reference, note=note, error=err)
    latency = {"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "requests": r.requests, "rps": rps}
    run.meta.setdefault("http_latency", {}).setdefault(contender, []).append(latency)
