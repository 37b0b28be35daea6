"""CSV formula injection: cells a spreadsheet would run as formulas get a leading `'` in CSV
(on by default, `csv_formula_guard = false` turns it off); JSON is as sent; the API and the
command line give the same bytes either way."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from sealexports.api.app import create_app
from sealexports.cli import cli
from sealexports.config import Settings
from sealexports.storage import accounts
from sealexports.storage.database import connect, transaction
from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits

FORMULAS = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\ry"]
RANGE = {"date_from": "2025-03-01", "date_to": "2025-03-31"}


pytestmark = pytest.mark.usefixtures("no_config_from_the_environment")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    path = tmp_path_factory.mktemp("formulas") / "f.db"
    conn = connect(path)
    site = accounts.create_site(conn, "shop")
    key = accounts.create_key(conn, "shop")
    visits = [
        Visit(
            pages=[PageView(datetime(2025, 3, 10, 10, i, tzinfo=UTC), f"/p{i}", formula)],
            utm_source=formula,
            utm_campaign="plain",
            conversions=[
                Conversion(datetime(2025, 3, 10, 10, i, 30, tzinfo=UTC), formula, f"/p{i}", None, -150 * i)
            ],
        )
        for i, formula in enumerate(FORMULAS)
    ]
    with transaction(conn):
        insert_visits(conn, site, visits)
    conn.close()
    yield path, key


def api_export(db: Path, key: str, tmp_path: Path, guard: bool, body: dict[str, Any]) -> bytes:
    settings = Settings(
        database=db, exports_dir=tmp_path / "exports", public_url="http://t.local", csv_formula_guard=guard
    )
    with TestClient(create_app(settings, run_workers=False), base_url="http://t.local") as client:
        r = client.post(
            "/api/v1/exports/stream", params={"site_id": "shop"}, headers={"X-API-Key": key}, json=body
        )
        assert r.status_code == 200, r.text
        return r.content


def cli_export(db: Path, guard: bool | None, *args: str) -> bytes:
    env = {} if guard is None else {"SEALEXPORTS_CSV_FORMULA_GUARD": "true" if guard else "false"}
    command = [
        "--db",
        str(db),
        "export",
        "--site",
        "shop",
        "--from",
        RANGE["date_from"],
        "--to",
        RANGE["date_to"],
    ]
    result = CliRunner().invoke(
        cli, [*command, *args, "-o", "-", "--silent"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.mark.parametrize("export_type", ["sources", "conversions"])
def test_csv_formulas_are_guarded_by_default_and_the_cli_agrees(
    db: tuple[Path, str], tmp_path: Path, export_type: str
) -> None:
    path, key = db
    got = api_export(path, key, tmp_path, True, {"export_type": export_type, "format": "csv", **RANGE})
    assert cli_export(path, None, "--type", export_type) == got
    cells = [cell for record in csv.reader(io.StringIO(got.decode(), newline="")) for cell in record]
    for formula in FORMULAS:
        assert "'" + formula in cells and formula not in cells
    if export_type == "conversions":  # amounts are computed numbers: negative, never guarded
        assert "-1.50" in cells and "'-1.50" not in cells


@pytest.mark.parametrize("export_type", ["sources", "conversions"])
def test_csv_formula_guard_can_be_turned_off(db: tuple[Path, str], tmp_path: Path, export_type: str) -> None:
    path, key = db
    got = api_export(path, key, tmp_path, False, {"export_type": export_type, "format": "csv", **RANGE})
    assert cli_export(path, False, "--type", export_type) == got
    cells = [cell for record in csv.reader(io.StringIO(got.decode(), newline="")) for cell in record]
    for formula in FORMULAS:
        assert formula in cells and "'" + formula not in cells


@pytest.mark.parametrize("export_type", ["sources", "conversions"])
def test_json_is_as_sent_whatever_the_guard(db: tuple[Path, str], tmp_path: Path, export_type: str) -> None:
    path, key = db
    body = {"export_type": export_type, "format": "json", **RANGE}
    on, off = (api_export(path, key, tmp_path, guard, body) for guard in (True, False))
    assert on == off == cli_export(path, None, "--type", export_type, "--format", "json")
    values = {v for row in json.loads(on) for v in row.values()}
    assert set(FORMULAS) <= values
