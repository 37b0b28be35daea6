"""http: status polls/s while two big exports run vs a bare Litestar route on the same uvicorn
setup; and, for information, the same polls while no export runs (ours-idle)."""

from __future__ import annotations

import functools
import threading
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
    """Polls of a job's status while two exports of every microconversion run: one that ends is
    replaced at once, so two run for the whole phase whatever the size of the data."""
    body = {"export_type": "microconversions", "format": "csv",
            "date_from": run.data.date_from.isoformat(), "date_to": run.data.date_to.isoformat()}  # fmt: skip
    polled = start_job(run, small_job(run))  # the same job object as ours-idle polls
    keeper = Keeper(run, body)
    try:
        keeper.start()
        result = poll(run, job_path(polled))
    finally:
        keeper.stop()
        run.servers.api("DELETE", job_path(polled))
    running = (f"two exports generating in {keeper.both_share:.0%} of {keeper.checks} checks, "
               f"{keeper.finished} finished during the phase")  # fmt: skip
    record(run, "ours", result, f"GET /api/v1/exports/{{job_id}}; {running}")


class Keeper:
    """Keeps two exports generating on the server: checks their statuses every CHECK seconds and
    replaces one that has ended (deleting it, which also cancels a running one at the end)."""

    CHECK = 0.2

    def __init__(self, run: Run, body: dict[str, str]) -> None:
        self.run, self.body = run, body
        self.jobs: list[str] = []
        self.checks = self.both = self.finished = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="bench-keeper", daemon=True)

    @property
    def both_share(self) -> float:
        return self.both / self.checks if self.checks else 0.0

    def start(self) -> None:
        self.jobs = [start_job(self.run, self.body) for _ in range(2)]
        wait_started(self.run, self.jobs)
        self._thread.start()

    def _keep(self) -> None:
        while not self._stop.wait(self.CHECK):
            statuses = job_statuses(self.run, self.jobs)
            self.checks += 1
            self.both += statuses.count("generating") == 2
            for i, status in enumerate(statuses):
                if status in ("completed", "failed", "expired"):
                    self.finished += status == "completed"
                    self.run.servers.api("DELETE", job_path(self.jobs[i]))
                    self.jobs[i] = start_job(self.run, self.body)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for job in self.jobs:
            self.run.servers.api("DELETE", job_path(job))


def ours_idle(run: Run) -> None:
    """Polls of a small job's status (one day of time_series: done during the POST)."""
    job = start_job(run, small_job(run))
    try:
        result = poll(run, job_path(job))
    finally:
        run.servers.api("DELETE", job_path(job))
    record(run, "ours-idle", result, "GET /api/v1/exports/{job_id} with no export running")


def small_job(run: Run) -> dict[str, str]:
    """One day of time_series: done during the POST."""
    day = run.data.date_to.isoformat()
    return {"export_type": "time_series", "format": "csv", "date_from": day, "date_to": day}


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
