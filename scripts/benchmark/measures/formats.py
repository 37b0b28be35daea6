"""formats_seconds / formats_memory: the same microconversion export (~100k rows) in every format
and compression, each in a fresh process (engine.write_file): its time, the file's size, and the
process's peak RSS, next to plain CSV's."""

from __future__ import annotations

import functools

from benchmark.data import SITE, Data, size
from benchmark.measures.memory import Spec
from benchmark.processes import child_export
from benchmark.run import Run, rotate
from sealexports.exports.formats import extension
from sealexports.exports.request import build_request

COMBOS = [
    ("csv", "none"), ("csv", "gzip"), ("csv", "zstd"), ("json", "none"), ("ndjson", "none"),
    ("ndjson", "zstd"), ("xlsx", "none"), ("parquet", "none"),
]  # fmt: skip
AIM = 100_000


def measure(run: Run, rep: int) -> None:
    spec = formats_spec(run.data)
    for fmt, compression in rotate(COMBOS, rep):
        name = extension(fmt, compression)
        run.attempt("formats_seconds", name, functools.partial(export, run, fmt, compression, spec))
    run.progress("formats_seconds", *(extension(f, c) for f, c in COMBOS))
    run.progress("formats_memory", *(extension(f, c) for f, c in COMBOS))


@functools.cache
def formats_spec(data: Data) -> Spec:
    """Whole days of microconversions from the first, nearest ~100,000 rows (the memory
    measure's ~1M would keep xlsx, at a few thousand rows/s, busy for minutes)."""
    per_day = data.query(
        "SELECT day, COUNT(*) FROM microconversions WHERE site_id = ? GROUP BY 1 ORDER BY 1", [SITE]
    )
    best, total = None, 0
    for day, n in per_day:
        total += n
        candidate = Spec(per_day[0][0], day, total)
        if best is None or abs(candidate.rows - AIM) < abs(best.rows - AIM):
            best = candidate
    if best is None:
        raise RuntimeError("no microconversions to export")
    return best


def export(run: Run, fmt: str, compression: str, spec: Spec) -> None:
    name = extension(fmt, compression)
    out = run.tmp / f"formats.{name}"
    try:
        req = build_request(
            SITE, "microconversions", fmt, spec.date_from, spec.date_to, spec.filters, compression=compression
        )
        seconds, info = child_export(run.data.db, req, out)
        note = f"{spec.rows:,} rows ({spec.where}), {size(out)}"
    finally:
        out.unlink(missing_ok=True)
    error = None if info["rows"] == spec.rows else f"{info['rows']:,} rows, expected {spec.rows:,}"
    rate = spec.rows / max(info["seconds"], 1e-9)
    run.results.add(
        "formats_seconds", name, info["seconds"], reference=name == "csv",
        note=f"{note}; {rate:,.0f} rows/s in write_file; {seconds:.2f} s the whole process", error=error,
    )  # fmt: skip
    run.results.add(
        "formats_memory", name, info["peak_rss_kib"] / 1024, unit="MiB", reference=name == "csv",
        note=f"{note}; peak RSS (VmHWM) of the whole process", error=error,
    )  # fmt: skip
