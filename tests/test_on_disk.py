"""Files and secrets on disk: everything the service writes is owner-only whatever the umask,
and the signing secret can live outside the database."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from sealexports.cli import cli
from sealexports.config import Settings, load_settings
from sealexports.errors import ConfigError, NotFound
from sealexports.exports import engine
from sealexports.exports.request import build_request
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect, secret_key
from sealexports.tokens import DownloadTokens
from tests import live
from tests.apps import ApiFactory, Template
from tests.conftest import seed_demo


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_every_file_and_folder_is_owner_only_after_a_real_run(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "var" / "data"  # the database's folder does not exist yet
    db = data / "sealexports.db"
    seed_demo(db, visits=1500, days=5)
    conn = connect(db)
    key = create_key(conn, "demo")
    conn.close()
    env = {"SEALEXPORTS_SYNC_ROW_LIMIT": "1"}  # every export is a background job
    with live.running(db, tmp_path, env=env) as server:
        body = {"export_type": "pages", "date_from": "2025-04-01", "date_to": "2025-04-05"}
        params, headers = {"site_id": "demo"}, {"X-API-Key": key}
        r = requests.post(f"{server.api}/exports", json=body, params=params, headers=headers, timeout=30)
        assert r.status_code == 201, r.text
        job_id = r.json()["job"]["job_id"]
        deadline = time.monotonic() + 30
        url = f"{server.api}/exports/{job_id}"
        while True:
            job = requests.get(url, params=params, headers=headers, timeout=30).json()
            if job["status"] == "completed":
                break
            assert job["status"] in ("pending", "estimating", "generating"), job
            assert time.monotonic() < deadline
            time.sleep(0.1)
        exports = tmp_path / "exports"
        files = {
            "database": db,
            "database -wal": data / "sealexports.db-wal",
            "database -shm": data / "sealexports.db-shm",
            "queue": data / "sealexports.db.queue",
            "queue -wal": data / "sealexports.db.queue-wal",
            "queue -shm": data / "sealexports.db.queue-shm",
            "export file": exports / f"{job_id}.csv",
        }
        seen = {name: mode(path) for name, path in files.items()}
        folders = {"database's folder": mode(data), "exports folder": mode(exports)}
        assert server.stop() in (0, -15)
    assert seen == dict.fromkeys(files, "0o600"), seen
    assert folders == dict.fromkeys(folders, "0o700"), folders


def test_temporary_export_files_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    demo = seed_demo(tmp_path / "demo.db", visits=200, days=2)
    conn = connect(demo.path)
    req = build_request("demo", "pages", "csv", str(demo.date_from), str(demo.date_to))
    seen: list[str] = []

    def look() -> bool:
        seen.extend(mode(p) for p in (tmp_path / "out").glob(".*.tmp"))
        return False

    info = engine.write_file(conn, req, tmp_path / "out" / "pages.csv", cancelled=look)
    conn.close()
    assert seen and set(seen) == {"0o600"}, seen
    assert mode(info.path) == "0o600" and mode(tmp_path / "out") == "0o700"


def test_an_operators_cli_export_follows_the_umask(tmp_path: Path, umask_022: None) -> None:
    demo = seed_demo(tmp_path / "demo.db", visits=200, days=2)
    out = tmp_path / "pages.csv"
    args = ["--db", str(demo.path), "export", "--site", "demo", "--type", "pages", "--silent",
            "--from", str(demo.date_from), "--to", str(demo.date_to), "--output", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert mode(out) == "0o644"


# --- The signing secret from a file --------------------------------------------------------------


def test_a_secret_key_file_signs_links_instead_of_the_stored_secret(
    make: ApiFactory, small: Template, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("a-secret-kept-out-of-the-database\n")
    api = make(small, secret_key_file=str(secret_file))
    job = api.created(api.body("sources"))["job"]
    token = job["download_url"].rsplit("/", 1)[1]
    with api.conn() as conn:
        stored = secret_key(conn)  # what a copy of the database holds
    assert DownloadTokens("a-secret-kept-out-of-the-database", 3600).open(token) == (job["job_id"], False)
    with pytest.raises(NotFound):
        DownloadTokens(stored, 3600).open(token)
    assert api.download(job["download_url"]).status_code == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read secret_key_file"), ("short\n", "at least 16"), (b"\xff" * 20, "not UTF-8")],
)
def test_a_bad_secret_key_file_is_one_clear_error(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    secret_file = tmp_path / "secret"
    if isinstance(content, str):
        secret_file.write_text(content)
    elif content is not None:
        secret_file.write_bytes(content)
    settings = Settings(database=tmp_path / "db", secret_key_file=str(secret_file))
    with pytest.raises(ConfigError, match=message):
        settings.configured_secret()
    assert CliRunner().invoke(cli, ["--db", str(tmp_path / "db"), "init"]).exit_code == 0  # serve needs one
    for command in (["serve"], ["worker"]):
        env = {"SEALEXPORTS_SECRET_KEY_FILE": str(secret_file)}
        result = CliRunner().invoke(cli, ["--db", str(tmp_path / "db"), *command], env=env)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output


def test_secret_key_and_secret_key_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x" * 32)
    settings = Settings(secret_key="y" * 32, secret_key_file=str(tmp_path / "secret"))
    with pytest.raises(ConfigError, match="not both"):
        settings.configured_secret()


def test_the_secret_key_can_come_from_the_environment() -> None:
    assert load_settings(environ={"SEALEXPORTS_SECRET_KEY": "e" * 20}).configured_secret() == "e" * 20
    environ = {"SEALEXPORTS_SECRET_KEY_FILE": "/nonexistent/secret"}
    with pytest.raises(ConfigError, match="/nonexistent/secret"):
        load_settings(environ=environ).configured_secret()
