"""Smoke test of scripts/bench_import.py on a tiny file: it runs end to end and reports both
contenders for both sizes. The figures themselves come from a full run (docs/events.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_bench_import_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_import.py"), "--events", "400", "--small", "100",
           "--dir", str(tmp_path), "--json", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert [r["events"] for r in figures["runs"]] == [100, 400]
    for run in figures["runs"]:
        assert run["ours_events_per_s"] > 0 and run["ref_events_per_s"] > 0
        assert run["ours_peak_rss_mib"] > 0
    assert "peak memory, 400 vs 100 events" in result.stdout
