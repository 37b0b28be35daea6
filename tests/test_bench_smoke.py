"""Smoke test of the benchmark harness: `scripts/bench --quick` on tiny data, end to end.

It checks that every measure runs and reports, not the figures (tiny data says nothing about
speed). The benchmark itself is `scripts/bench`; it is not part of the test suite. The test runs
the package (`python -m benchmark`) in the suite's own environment: scripts/bench would set up
.venv first when it lacks the bench tools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AGGREGATES = (
    "pages", "sources", "mediums", "campaigns", "terms", "countries", "devices", "browsers", "os",
    "time_series", "landing_pages",
)  # fmt: skip
ESTIMATED = ("conversions", "microconversions", "sources", "pages")
MEASURES = [
    "seeding",
    "raw_csv",
    "raw_json",
    *(f"agg_{t}" for t in AGGREGATES),
    "filtered_visit",
    "filtered_path",
    *(f"estimate_{t}" for t in ESTIMATED),
    "memory_csv",
    "memory_json",
    "formats_seconds",
    "formats_memory",
    "http",
    "import",
    "import_small",
    "import_cpu",
    "import_memory",
]
CONTENDERS = {
    "raw_csv": {"ours", "sealexports export", "sqlite3", "sqlite-utils", "datasette"},
    "raw_json": {"ours", "sealexports export", "sqlite3"},
    "estimate_sources": {"estimate", "http_estimate", "export"},
    "memory_csv": {"~10k rows", "~1M rows"},
    "formats_seconds": {"csv", "csv.gz", "csv.zst", "json", "ndjson", "ndjson.zst", "xlsx", "parquet"},
    "http": {"ours", "ours-idle", "bare"},
    "import": {"sealexports import", "sqlite-utils insert"},
    "import_memory": {"400 events", "100 events"},
}


@pytest.mark.timeout(90)
def test_bench_quick(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "--quick", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=80,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("targets: "), last

    doc = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["measure"], r["contender"]): r for r in doc["results"]}
    measures = {m for m, _ in rows}
    assert set(MEASURES) <= measures, set(MEASURES) - measures
    for measure, contenders in CONTENDERS.items():
        assert contenders <= {c for m, c in rows if m == measure}, measure
    for r in doc["results"]:
        if r["measure"] != "seeding":
            assert r["median"] is not None and r["median"] > 0 and not r["errors"], r
    assert rows[("seeding", "ours")]["median"] > 0  # a fresh folder: it seeded
    assert len(doc["targets"]) == 32
    assert doc["summary"] == last
    # Servers and temporary files are gone; the data files stay for the next run.
    data = ["bench-2000-3.db", "import-100.ndjson", "import-400.ndjson", "results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == data
