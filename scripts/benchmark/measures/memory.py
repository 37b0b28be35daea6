"""memory_{fmt}: peak RSS of a whole fresh process exporting ~10k vs ~1M rows, CSV and JSON."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from benchmark.data import LARGE, SITE, SMALL, Data
from benchmark.processes import child_export
from benchmark.run import Run, rotate
from sealexports.exports.request import build_request


@dataclass(frozen=True)
class Spec:
    """One microconversion export and the rows it gives."""

    date_from: str
    date_to: str
    rows: int
    filters: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.date_from}..{self.date_to}" + "".join(f" {k}={v}" for k, v in self.filters.items())


def measure(run: Run, rep: int) -> None:
    specs = memory_specs(run.data)
    runs = [(fmt, label, spec) for fmt in ("csv", "json") for label, spec in specs.items()]
    for fmt, label, spec in rotate(runs, rep):
        run.attempt(f"memory_{fmt}", label, functools.partial(export, run, fmt, label, spec))
    for fmt in ("csv", "json"):
        run.progress(f"memory_{fmt}", *specs)


@functools.cache
def memory_specs(data: Data) -> dict[str, Spec]:
    """Microconversion exports of ~10,000 and ~1,000,000 rows.

    Whole-day ranges; when none comes within 2x of 10,000 (a day of the default data has
    ~35,000), one day with one conversion_type."""
    cells = data.query(
        "SELECT day, conversion_type, COUNT(*) FROM microconversions WHERE site_id = ? GROUP BY 1, 2", [SITE]
    )
    per_day: dict[str, int] = {}
    for day, _, n in cells:
        per_day[day] = per_day.get(day, 0) + n
    days = sorted(per_day)
    ranges = [
        Spec(days[i], days[j], sum(per_day[d] for d in days[i : j + 1]))
        for i in range(len(days)) for j in range(i, len(days))
    ]  # fmt: skip

    def closest(aim: int, options: list[Spec]) -> Spec:
        return min(options, key=lambda o: (abs(o.rows - aim), o.date_from, o.date_to))

    small = closest(10_000, ranges)
    if not 5_000 <= small.rows <= 20_000:
        small = closest(10_000, [*ranges, *(Spec(d, d, n, {"conversion_type": c}) for d, c, n in cells)])
    return {SMALL: small, LARGE: closest(1_000_000, ranges)}


def export(run: Run, fmt: str, label: str, spec: Spec) -> None:
    out = run.tmp / "memory.out"
    try:
        req = build_request(SITE, "microconversions", fmt, spec.date_from, spec.date_to, spec.filters)
        _, info = child_export(run.data.db, req, out)
    finally:
        out.unlink(missing_ok=True)
    run.results.add(
        f"memory_{fmt}", label, info["peak_rss_kib"] / 1024, unit="MiB", reference=label == SMALL,
        note=f"{spec.rows:,} rows ({spec.where}); peak RSS (VmHWM) of the whole process",
        error=None if info["rows"] == spec.rows else f"{info['rows']:,} rows, expected {spec.rows:,}",
    )  # fmt: skip
