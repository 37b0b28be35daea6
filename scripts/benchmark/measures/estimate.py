"""estimate_{type}: engine.estimate() and POST /exports/estimate vs the CSV export they estimate."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from benchmark.data import ESTIMATED, SITE
from benchmark.run import Run, rotate
from sealexports.config import Settings
from sealexports.exports import engine
from sealexports.storage.database import connect


def measure(run: Run, rep: int) -> None:
    for t in rotate(list(ESTIMATED), rep):
        estimate(run, t, rep)


def estimate(run: Run, export_type: str, rep: int) -> None:
    req = run.data.request(export_type, "csv")
    measure, out = f"estimate_{export_type}", run.tmp / "estimated.csv"
    limit = Settings().sync_row_limit

    def in_process() -> None:
        with contextlib.closing(connect(run.data.db, migrate=False)) as conn:
            started = time.perf_counter()
            est = engine.estimate(conn, req, limit)
            seconds = time.perf_counter() - started
        run.results.add(measure, "estimate", seconds, note=f"{est.estimated_rows:,} rows estimated")

    def over_http() -> None:
        body = {"export_type": export_type, "format": "csv",
                "date_from": req.date_from.isoformat(), "date_to": req.date_to.isoformat()}  # fmt: skip
        path = f"/api/v1/exports/estimate?site_id={SITE}"
        run.servers.get("ours")  # started before the clock
        started = time.perf_counter()
        status, data = run.servers.api("POST", path, body)
        seconds = time.perf_counter() - started
        err = None if status == 200 else f"HTTP {status}: {data}"
        run.results.add(measure, "http_estimate", seconds, note=f"POST {path}", error=err)

    def export() -> None:
        with contextlib.closing(connect(run.data.db, migrate=False)) as conn:
            started = time.perf_counter()
            info = engine.write_file(conn, req, out)
            seconds = time.perf_counter() - started
        run.results.add(measure, "export", seconds, reference=True, note=f"{info.rows:,} rows")

    contenders: list[tuple[str, Callable[[], None]]] = [
        ("estimate", in_process), ("http_estimate", over_http), ("export", export),
    ]  # fmt: skip
    for contender, fn in rotate(contenders, rep):
        run.attempt(measure, contender, fn)
    out.unlink(missing_ok=True)
    run.progress(measure, "estimate", "http_estimate", "export")
