"""filtered_*: an aggregate over the last 30 days under one visit filter (country=ES) and under
advanced path filters, ours in-process (a fresh connection) vs its bare SQL in the sqlite3 shell.
Targets: at most 1 s (filtered_visit) and 3 s (filtered_path); the two other path measures show
what the rollups (time_series) and the distinct pages (a regex) save, with no target of their own."""

from __future__ import annotations

from benchmark.measures.aggregates import against_sqlite3
from benchmark.run import Run, rotate

FILTERS = {
    "filtered_visit": ("sources", {"country": "ES"}),
    "filtered_path": ("sources", {"advanced_filters": "path:contains:/blog/"}),
    "filtered_path_days": ("time_series", {"advanced_filters": "path:contains:/blog/"}),
    "filtered_path_regex": ("sources", {"advanced_filters": "path:regex:^/blog/"}),
}


def measure(run: Run, rep: int) -> None:
    for name in rotate(list(FILTERS), rep):
        filtered(run, name, rep)


def filtered(run: Run, name: str, rep: int) -> None:
    export_type, filters = FILTERS[name]
    req = run.data.request(export_type, "csv", run.data.last30_from, filters)
    # time_series has every day of the range, its bare SQL only the days with data.
    against_sqlite3(
        run, name, req, rep, note=f"{export_type}, {filters}, ", more_ok=export_type == "time_series"
    )
