"""Exports as files: the same request gives the same bytes, files are written whole or not at all,
multi-chunk exports; and estimates.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sealexports.errors import Cancelled
from sealexports.exports import engine
from sealexports.storage.database import connect
from tests.checks import assert_human_size
from tests.conftest import DemoDB, seed_demo
from tests.exported import (
    AGGREGATE_TYPES,
    DST_FROM,
    DST_TO,
    FORMATS,
    assert_matches_model,
    export_bytes,
    make_request,
    read_export,
)
from tests.model import (
    EXPORT_TYPES,
    Model,
)

# --- Determinism and files ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("export_type", EXPORT_TYPES)
def test_same_request_same_bytes(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str, fmt: str
) -> None:
    filters = {"advanced_filters": "device_type:ne:tablet"}
    first = export_bytes(demo_conn, make_request(demo_db, export_type, fmt, filters=filters))
    other = connect(demo_db.path)
    try:
        second = export_bytes(other, make_request(demo_db, export_type, fmt, filters=filters))
    finally:
        other.close()
    assert first == second
    assert len(first) > 100


@pytest.mark.parametrize(
    ("export_type", "fmt"),
    [("conversions", "csv"), ("microconversions", "json"), ("pages", "csv"), ("time_series", "json")],
)
def test_write_file_equals_chunks(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, tmp_path: Path, export_type: str, fmt: str
) -> None:
    req = make_request(demo_db, export_type, fmt)
    dest = tmp_path / "out" / req.file_name
    seen: list[int] = []
    info = engine.write_file(demo_conn, req, dest, progress=seen.append)
    data = export_bytes(demo_conn, req)
    assert dest.read_bytes() == data
    assert info.path == dest
    assert info.size_bytes == len(data) == dest.stat().st_size
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    n_rows = len(read_export(demo_conn, req))
    assert info.rows == n_rows > 0
    assert seen and seen[-1] == n_rows
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporary file left


def test_write_file_cancelled_leaves_nothing(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, tmp_path: Path
) -> None:
    req = make_request(demo_db, "conversions", "csv")
    dest = tmp_path / req.file_name
    with pytest.raises(Cancelled):
        engine.write_file(demo_conn, req, dest, cancelled=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_write_file_error_in_callback_leaves_nothing(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, tmp_path: Path
) -> None:
    req = make_request(demo_db, "sources", "json")
    dest = tmp_path / req.file_name

    def progress(n: int) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        engine.write_file(demo_conn, req, dest, progress=progress)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> DemoDB:
    """A second database with enough microconversions for several writer chunks."""
    return seed_demo(tmp_path_factory.mktemp("big") / "big.db", site_id="big", days=5, visits=9000, seed=3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_multi_chunk_export(big_db: DemoDB, tmp_path: Path, fmt: str) -> None:
    """An export over several chunks matches the model, cancels between chunks, and writes atomically."""
    conn = connect(big_db.path)
    try:
        req = make_request(big_db, "microconversions", fmt)
        parts = list(engine.chunks(conn, req))
        assert len([p for p in parts if p]) >= 2
        model_rows = assert_matches_model(conn, Model(big_db.visits, big_db.site.timezone), req)

        asked: list[int] = []

        def cancel_second() -> bool:
            asked.append(1)
            return len(asked) >= 2

        written: list[int] = []
        dest = tmp_path / req.file_name
        with pytest.raises(Cancelled):
            engine.write_file(conn, req, dest, progress=written.append, cancelled=cancel_second)
        assert len(asked) == 2  # asked again before the second chunk, and stopped there
        assert all(n < len(model_rows) for n in written)
        assert list(tmp_path.iterdir()) == []

        info = engine.write_file(conn, req, dest, cancelled=lambda: False)
        assert dest.read_bytes() == b"".join(parts)
        model = Model(big_db.visits, big_db.site.timezone)
        assert info.rows == len(model.selected("micro", big_db.date_from, big_db.date_to)) > 2000
        assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]
    finally:
        conn.close()


# --- Estimates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        None,
        {"device_type": "tablet"},
        {"advanced_filters": "path:contains:/products/"},
        {"utm_source": "nope"},
    ],
    ids=["none", "tablet", "products", "nothing"],
)
@pytest.mark.parametrize("export_type", ["conversions", "microconversions", "time_series"])
def test_estimate_exact(
    demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str, filters: dict[str, Any] | None
) -> None:
    for d0, d1 in [(demo_db.date_from, demo_db.date_to), (DST_FROM, DST_TO)]:
        req = make_request(demo_db, export_type, "csv", d0, d1, filters)
        est = engine.estimate(demo_conn, req, 10_000)
        assert est.estimated_rows == len(read_export(demo_conn, req))
        if export_type == "time_series":
            assert est.estimated_rows == (d1 - d0).days + 1


@pytest.mark.parametrize("export_type", AGGREGATE_TYPES)
def test_estimate_aggregates_close(demo_db: DemoDB, demo_conn: sqlite3.Connection, export_type: str) -> None:
    req = make_request(demo_db, export_type, "csv")
    actual = len(read_export(demo_conn, req))
    est = engine.estimate(demo_conn, req, 10_000)
    assert actual > 0
    assert abs(est.estimated_rows - actual) <= 0.2 * actual, (est.estimated_rows, actual)
    size = len(export_bytes(demo_conn, req))
    assert size / 3 <= est.estimated_size_bytes <= size * 3, (est.estimated_size_bytes, size)
    nothing = make_request(demo_db, export_type, "csv", filters={"utm_source": "nope"})
    assert engine.estimate(demo_conn, nothing, 10_000).estimated_rows == 0


def test_estimate_background_flips_at_limit(demo_db: DemoDB, demo_conn: sqlite3.Connection) -> None:
    req = make_request(demo_db, "microconversions", "csv")
    n = engine.estimate(demo_conn, req, 10_000).estimated_rows
    assert n > 1
    assert engine.estimate(demo_conn, req, n).will_use_background_job is True
    assert engine.estimate(demo_conn, req, n + 1).will_use_background_job is False
    assert engine.estimate(demo_conn, req, n - 1).will_use_background_job is True
    est = engine.estimate(demo_conn, req, n + 1)
    assert est.estimated_duration_seconds >= 1
    assert_human_size(est.estimated_size_human, est.estimated_size_bytes)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (850, "850 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (45230, "44.2 KB"),
        (8_500_000, "8.1 MB"),
        (1_024_000, "1000.0 KB"),
        (1024**2 - 1, "1.0 MB"),  # 1023.999 KB rounds to 1024.0: the next unit
        (3 * 1024**3, "3.0 GB"),
    ],
)
def test_human_size(n: int, text: str) -> None:
    assert engine.human_size(n) == text
