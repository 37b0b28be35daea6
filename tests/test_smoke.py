from __future__ import annotations

import csv
import io
import sqlite3

from sealexports.exports import engine
from sealexports.exports.request import build_request
from tests.conftest import DemoDB


def test_sources_csv_total_entrances_match_visits(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    req = build_request("demo", "sources", "csv", str(demo_db.date_from), str(demo_db.date_to))
    text = b"".join(engine.chunks(demo_conn, req)).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sum(int(r["entrances"]) for r in rows) == len(demo_db.visits)
