"""filtered_visit / filtered_path: the `sources` aggregate over the last 30 days under one visit
filter (country=ES) and under an advanced path filter (path:contains:/blog/), ours in-process
(a fresh connection) vs its bare SQL in the sqlite3 shell. Targets: at most 1 s and 3 s."""

from __future__ import annotations

from benchmark.measures.aggregates import against_sqlite3
from benchmark.run import Run, rotate

FILTERS = {"filtered_visit": {"country": "ES"}, "filtered_path": {"advanced_filters": "path:contains:/blog/"}}


def measure(run: Run, rep: int) -> None:
    for name in rotate(list(FILTERS), rep):
        filtered(run, name, rep)


def filtered(run: Run, name: str, rep: int) -> None:
    req = run.data.request("sources", "csv", run.data.last30_from, FILTERS[name])
    against_sqlite3(run, name, req, rep, note=f"sources, {FILTERS[name]}, ", more_ok=False)
