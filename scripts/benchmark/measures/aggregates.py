"""agg_{type}: every aggregate over the last 30 days, ours in-process (a fresh connection) vs
its bare SQL in the sqlite3 shell."""

from __future__ import annotations

import contextlib
import time

from benchmark.data import AGGREGATES, count_rows, inline_sql
from benchmark.processes import SQLITE3, run_timed
from benchmark.run import Run, rotate
from sealexports.exports import engine
from sealexports.exports.queries import export_query
from sealexports.exports.request import ExportRequest
from sealexports.storage.database import connect


def measure(run: Run, rep: int) -> None:
    for t in rotate(list(AGGREGATES), rep):
        aggregate(run, t, rep)


def aggregate(run: Run, export_type: str, rep: int) -> None:
    req = run.data.request(export_type, "csv", run.data.last30_from)
    # time_series has every day of the range, its bare SQL only the days with data.
    against_sqlite3(run, f"agg_{export_type}", req, rep, note="", more_ok=export_type == "time_series")


def against_sqlite3(
    run: Run, measure: str, req: ExportRequest, rep: int, *, note: str, more_ok: bool
) -> None:
    """`req` written by us in-process (a fresh connection) vs its bare SQL in the sqlite3 shell,
    alternated; a row count that differs is recorded as an error (more rows only if `more_ok`)."""
    sql = inline_sql(*export_query(req))
    out = run.tmp / f"{measure}.csv"
    rows: dict[str, int] = {}

    def ours() -> None:
        with contextlib.closing(connect(run.data.db, migrate=False)) as conn:
            started = time.perf_counter()
            info = engine.write_file(conn, req, out)
            seconds = time.perf_counter() - started
        rows["ours"] = info.rows
        run.results.add(measure, "ours", seconds, note=f"{note}{info.rows:,} rows")

    def bare() -> None:
        seconds = run_timed([SQLITE3, "-csv", "-header", str(run.data.db), sql], out)
        rows["sqlite3"] = count_rows(out, "csv")
        run.results.add(measure, "sqlite3", seconds, reference=True)

    for contender, fn in rotate([("ours", ours), ("sqlite3", bare)], rep):
        run.attempt(measure, contender, fn)
    out.unlink(missing_ok=True)
    n, m = rows.get("ours"), rows.get("sqlite3")
    if n is not None and m is not None and n != m and not (more_ok and n >= m):
        run.results.add(measure, "ours", None, error=f"{n:,} rows where its SQL gives {m:,}")
    run.progress(measure, "ours", "sqlite3")
