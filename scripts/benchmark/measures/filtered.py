"""filtered_visit / filtered_path: the `sources` aggregate over the last 30 days under one visit
filter (country=ES) and under an advanced path filter (path:contains:/blog/), ours in-process
(a fresh connection) vs its bare SQL in the sqlite3 shell. Targets: at most 1 s and 3 s."""

from __future__ import annotations

import contextlib
import time

from benchmark.data import count_rows, inline_sql
from benchmark.processes import SQLITE3, run_timed
from benchmark.run import Run, rotate
from sealexports.exports import engine
from sealexports.exports.queries import export_query
from sealexports.storage.database import connect

FILTERS = {"filtered_visit": {"country": "ES"}, "filtered_path": {"advanced_filters": "path:contains:/blog/"}}


def measure(run: Run, rep: int) -> None:
    for name in rotate(list(FILTERS), rep):
        filtered(run, name, rep)


def filtered(run: Run, name: str, rep: int) -> None:
    req = run.data.request("sources", "csv", run.data.last30_from, FILTERS[name])
    sql = inline_sql(*export_query(req))
    out = run.tmp / "filtered.csv"
    rows: dict[str, int] = {}

    def ours() -> None:
        with contextlib.closing(connect(run.data.db, migrate=False)) as conn:
            started = time.perf_counter()
            info = engine.write_file(conn, req, out)
            seconds = time.perf_counter() - started
        rows["ours"] = info.rows
        run.results.add(name, "ours", seconds, note=f"sources, {FILTERS[name]}, {info.rows:,} rows")

    def bare() -> None:
        seconds = run_timed([SQLITE3, "-csv", "-header", str(run.data.db), sql], out)
        rows["sqlite3"] = count_rows(out, "csv")
        run.results.add(name, "sqlite3", seconds, reference=True)

    for contender, fn in rotate([("ours", ours), ("sqlite3", bare)], rep):
        run.attempt(name, contender, fn)
    out.unlink(missing_ok=True)
    n, m = rows.get("ours"), rows.get("sqlite3")
    if n is not None and m is not None and n != m:
        run.results.add(name, "ours", None, error=f"{n:,} rows where its SQL gives {m:,}")
    run.progress(name, "ours", "sqlite3")
