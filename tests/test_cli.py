"""The `sealexports` command line, through click's CliRunner, on real SQLite files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from sealexports import __version__
from sealexports.cli import COMMAND_MODULES, cli
from sealexports.errors import InvalidRequest, Unauthorized
from sealexports.exports.types import EXPORT_TYPES
from sealexports.storage import accounts
from sealexports.storage.database import connect
from sealexports.storage.visits import ANALYTICS_TABLES
from tests.checks import assert_cli_error
from tests.commands import run

SEED_ARGS = ["seed", "--site", "demo", "--days", "5", "--visits", "500", "--end", "2025-03-31", "--silent"]
RANGE = ["--from", "2025-03-27", "--to", "2025-03-31"]


pytestmark = pytest.mark.usefixtures("no_config_from_the_environment")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo site seeded by the CLI; read-only for the export tests."""
    db = tmp_path_factory.mktemp("seeded") / "seeded.db"
    result = run(db, *SEED_ARGS)
    assert result.exit_code == 0, result.output
    return db


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))  # hidden files too


def table_rows(path: Path, table: str, skip: tuple[str, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in skip]
    rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1, 2, 3").fetchall()
    conn.close()
    return rows


def schema(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    return rows


def parse_table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


# --- Group, help, version -----------------------------------------------------------------------


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's path, as help finds them (the top group imports a command's module when
    asked for it)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{name} is listed but cannot be loaded"
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_module_is_known_to_the_group() -> None:
    """A command registered by a module but missing from COMMAND_MODULES could not be run."""
    list(all_commands(cli))  # imports every command module
    assert set(cli.commands) == {*COMMAND_MODULES, "init"}


def test_every_command_help_shows_an_example(tmp_path: Path) -> None:
    paths = [(), *all_commands(cli)]
    assert {("init",), ("sites", "create"), ("keys", "revoke"), ("seed",), ("export",)} <= set(paths)
    for path in paths:
        for flag in ("--help", "-h"):
            result = run(tmp_path / "db.sqlite", *path, flag)
            assert result.exit_code == 0, (path, result.output)
            assert "Example:" in result.stdout, path
            assert "sealexports" in result.stdout.split("Example:", 1)[1], path


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


# --- init ---------------------------------------------------------------------------------------


def test_init_is_idempotent(db_path: Path) -> None:
    first = run(db_path, "init")
    assert first.exit_code == 0, first.output
    assert str(db_path) in first.stdout
    before = schema(db_path)
    assert any(name == "visits" for name, _ in before)
    second = run(db_path, "init")
    assert second.exit_code == 0, second.output
    assert schema(db_path) == before


def test_config_file_and_environment_choose_the_database(tmp_path: Path) -> None:
    from_file = tmp_path / "from-file.db"
    config = tmp_path / "c.toml"
    config.write_text(f'database = "{from_file}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "init"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert from_file.is_file()

    from_env = tmp_path / "from-env.db"
    result = CliRunner().invoke(
        cli,
        ["init"],
        env={"SEALEXPORTS_CONFIG": str(config), "SEALEXPORTS_DATABASE": str(from_env)},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert from_env.is_file()

    from_flag = tmp_path / "from-flag.db"
    result = CliRunner().invoke(
        cli, ["--config", str(config), "--db", str(from_flag), "init"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert from_flag.is_file()


@pytest.mark.parametrize(
    ("content", "named"),
    [("port = 0\n", "'port'"), ("prot = 1\n", "'prot'"), ("port = \n", "not valid TOML")],
)
def test_bad_config_is_one_error_line(tmp_path: Path, content: str, named: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(content)
    result = CliRunner().invoke(cli, ["--config", str(config), "init"], catch_exceptions=False)
    assert_cli_error(result, named)
    result = CliRunner().invoke(
        cli, ["init"], env={"SEALEXPORTS_CONFIG": str(config)}, catch_exceptions=False
    )
    assert_cli_error(result, named)


def test_bad_environment_override_is_one_error_line(db_path: Path) -> None:
    assert_cli_error(run(db_path, "init", env={"SEALEXPORTS_SYNC_ROW_LIMIT": "lots"}), "SYNC_ROW_LIMIT")


# --- sites --------------------------------------------------------------------------------------


def sites_table(db: Path) -> list[list[str]]:
    result = run(db, "sites", "list")
    assert result.exit_code == 0, result.output
    return parse_table(result.stdout)


@pytest.fixture
def db(db_path: Path) -> Path:
    """A new database made by `init` (the only commands that create one: init, migrate, seed,
    serve --demo)."""
    assert run(db_path, "init").exit_code == 0
    return db_path


def test_sites_create_and_list(db: Path) -> None:
    result = run(
        db,
        "sites",
        "create",
        "shop",
        "--timezone",
        "Europe/Madrid",
        "--plan",
        "pro",
        "--account",
        "acme",
    )
    assert result.exit_code == 0, result.output
    assert "shop" in result.stdout and "acme" in result.stdout and "Europe/Madrid" in result.stdout
    result = run(db, "sites", "create", "blog", "--account", "acme", "--name", "TheBlog")
    assert result.exit_code == 0, result.output
    result = run(db, "sites", "create", "solo")
    assert result.exit_code == 0, result.output
    assert sites_table(db) == [
        ["site_id", "name", "account", "plan", "timezone"],
        ["blog", "TheBlog", "acme", "pro", "UTC"],
        ["shop", "shop", "acme", "pro", "Europe/Madrid"],
        ["solo", "solo", "solo", "free", "UTC"],
    ]
    conn = connect(db)
    assert accounts.get_site(conn, "blog").account == accounts.get_site(conn, "shop").account
    assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 2
    conn.close()


def test_another_plan_for_an_existing_account_is_refused(db: Path) -> None:
    run(db, "sites", "create", "a", "--account", "acme")
    result = run(db, "sites", "create", "b", "--account", "acme", "--plan", "enterprise")
    assert_cli_error(result, "account 'acme' has the free plan", "accounts set-plan acme enterprise")
    assert [row[:4] for row in sites_table(db)[1:]] == [["a", "a", "acme", "free"]]  # no site b either
    # Its own plan, or none, adds the site.
    assert run(db, "sites", "create", "b", "--account", "acme", "--plan", "free").exit_code == 0
    assert run(db, "sites", "create", "c", "--account", "acme").exit_code == 0
    assert [row[3] for row in sites_table(db)[1:]] == ["free", "free", "free"]


def test_sites_list_on_an_empty_database(db: Path) -> None:
    assert sites_table(db) == [["site_id", "name", "account", "plan", "timezone"]]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["Shop"], "invalid site id 'Shop'"),
        (["my site"], "invalid site id"),
        (["-"], None),  # click reads it as an argument value; still refused
        (["x" * 65], "invalid site id"),
        (["new", "--timezone", "Europe/Atlantis"], "unknown time zone 'Europe/Atlantis'"),
        (["new", "--timezone", ""], "unknown time zone"),
        (["shop"], "site 'shop' already exists"),
        (["new", "--plan", "gold"], "'gold'"),
    ],
)
def test_bad_site_create_is_one_error_line(db: Path, args: list[str], expected: str | None) -> None:
    assert run(db, "sites", "create", "shop").exit_code == 0
    before = sites_table(db)
    assert_cli_error(run(db, "sites", "create", *args), *([expected] if expected else []))
    assert sites_table(db) == before


# --- keys ---------------------------------------------------------------------------------------


def test_keys_create_prints_only_the_key(db: Path) -> None:
    run(db, "sites", "create", "shop", "--account", "acme")
    result = run(db, "keys", "create", "--site", "shop", "--name", "ci")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    key = lines[0]
    assert key.startswith("sm_") and key == key.strip() and len(key) > 40
    assert result.stderr == ""
    conn = connect(db)
    assert accounts.authenticate(conn, key).name == "acme"
    conn.close()


def test_keys_list_shows_the_prefix_never_the_key(db: Path) -> None:
    run(db, "sites", "create", "shop", "--account", "acme")
    key = run(db, "keys", "create", "--site", "shop", "--name", "ci").stdout.strip()
    result = run(db, "keys", "list")
    assert result.exit_code == 0, result.output
    assert key not in result.stdout
    table = parse_table(result.stdout)
    header = ["prefix", "account", "site", "scope", "name", "created_at", "last_used_at", "revoked_at"]
    assert table[0] == header
    assert table[1][:5] == [key[: accounts.KEY_PREFIX_LEN], "acme", "shop", "read", "ci"]
    assert len(table) == 2
    # An account-wide key shows * for its site.
    run(db, "keys", "create", "--account", "acme", "--name", "all")
    assert parse_table(run(db, "keys", "list").stdout)[2][1:5] == ["acme", "*", "read", "all"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --site SITE (one site) or --account NAME"),
        (["--site", "shop", "--account", "acme"], "not both"),
        (["--account", "nobody"], "account 'nobody' not found"),
        (["--site", "nowhere"], "site 'nowhere' not found"),
    ],
)
def test_keys_create_needs_one_site_or_one_account(db: Path, args: list[str], message: str) -> None:
    run(db, "sites", "create", "shop", "--account", "acme")
    result = run(db, "keys", "create", *args)
    assert result.exit_code != 0 and message in result.stderr, result.output
    assert result.stdout == ""
    assert len(parse_table(run(db, "keys", "list").stdout)) == 1  # no key was made


def test_keys_revoke(db: Path) -> None:
    run(db, "sites", "create", "shop")
    key = run(db, "keys", "create", "--site", "shop").stdout.strip()
    kept = run(db, "keys", "create", "--site", "shop").stdout.strip()
    prefix = key[: accounts.KEY_PREFIX_LEN]
    result = run(db, "keys", "revoke", prefix)
    assert result.exit_code == 0, result.output
    assert prefix in result.stdout
    rows = {row[0]: row for row in parse_table(run(db, "keys", "list").stdout)[1:]}
    # Non-empty cells: prefix, account, site, scope, created_at [, revoked_at] (no name, never used).
    assert len(rows[prefix]) == 6
    assert rows[prefix][5].startswith("20")
    assert len(rows[kept[: accounts.KEY_PREFIX_LEN]]) == 5
    conn = connect(db)
    with pytest.raises(Unauthorized):
        accounts.authenticate(conn, key)
    assert accounts.authenticate(conn, kept).name == "shop"
    conn.close()
    # Revoking again: there is no active key with that prefix.
    assert_cli_error(run(db, "keys", "revoke", prefix), prefix)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["revoke", "sm_unknown000"], "'sm_unknown000'"),
        (["create", "--site", "nope"], "site 'nope' not found"),
        (["create"], "--site"),
    ],
)
def test_bad_keys_commands_are_one_error_line(db: Path, args: list[str], expected: str) -> None:
    run(db, "sites", "create", "shop")
    assert_cli_error(run(db, "keys", *args), expected)
    assert parse_table(run(db, "keys", "list").stdout)[1:] == []


# --- seed ---------------------------------------------------------------------------------------


def analytics(db: Path) -> dict[str, list[tuple[object, ...]]]:
    return {table: table_rows(db, table) for table in ANALYTICS_TABLES}


def test_seed_creates_the_demo_site_in_madrid(seeded: Path) -> None:
    conn = connect(seeded)
    site = accounts.get_site(conn, "demo")
    assert site.timezone == "Europe/Madrid"
    visits = conn.execute("SELECT count(*), min(day), max(day) FROM visits WHERE site_id = 'demo'").fetchone()
    conn.close()
    assert visits == (500, "2025-03-27", "2025-03-31")


def test_seed_is_deterministic(tmp_path: Path, seeded: Path) -> None:
    other = tmp_path / "other.db"
    assert run(other, *SEED_ARGS).exit_code == 0
    contents = analytics(other)
    assert all(contents[t] for t in ("visits", "pageviews", "conversions", "microconversions", "pages"))
    assert contents == analytics(seeded)
    skip = ("created_at",)
    assert table_rows(other, "sites", skip) == table_rows(seeded, "sites", skip)
    assert table_rows(other, "accounts", skip) == table_rows(seeded, "accounts", skip)
    # A different seed gives different data: the comparison above means something.
    different = tmp_path / "different.db"
    assert run(different, *SEED_ARGS, "--seed", "43").exit_code == 0
    assert analytics(different)["visits"] != contents["visits"]


def test_seed_twice_needs_replace(tmp_path: Path, seeded: Path) -> None:
    db = tmp_path / "twice.db"
    assert run(db, *SEED_ARGS).exit_code == 0
    before = analytics(db)
    result = run(db, *SEED_ARGS[:-1], "--visits", "50", "--silent")
    assert_cli_error(result, "--replace")
    assert analytics(db) == before  # nothing half-written
    result = run(db, *SEED_ARGS, "--replace")
    assert result.exit_code == 0, result.output
    assert analytics(db) == analytics(seeded)
    result = run(db, *SEED_ARGS[:-1], "--visits", "50", "--silent", "--replace")
    assert result.exit_code == 0, result.output
    assert len(analytics(db)["visits"]) == 50


def test_seed_another_site_is_utc_and_reports_on_stderr(db: Path) -> None:
    result = run(db, "seed", "--site", "blog", "--days", "2", "--visits", "20", "--end", "2025-01-02")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Seeded blog: 20 visits" in result.stderr
    conn = connect(db)
    assert accounts.get_site(conn, "blog").timezone == "UTC"
    conn.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--end", "2025-02-30"], "2025-02-30"),
        (["--end", "2025-1-1"], "2025-1-1"),
        (["--site", "Bad Site"], "invalid site id"),
        (["--days", "0"], "--days"),
        (["--visits", "many"], "--visits"),
    ],
)
def test_bad_seed_is_one_error_line(db: Path, args: list[str], expected: str) -> None:
    assert_cli_error(run(db, "seed", "--silent", *args), expected)
    conn = connect(db)
    assert conn.execute("SELECT count(*) FROM visits").fetchone()[0] == 0
    conn.close()


# --- export -------------------------------------------------------------------------------------


def export(db: Path, *args: str) -> Result:
    return run(db, "export", "--site", "demo", *RANGE, *args)


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_export_default_file_name_in_the_current_folder(seeded: Path, out: Path) -> None:
    result = export(seeded, "--type", "sources")
    assert result.exit_code == 0, result.output
    assert listing(out) == ["sealmetrics_sources_20250327_20250331.csv"]
    assert result.stdout == ""
    assert "Wrote" in result.stderr
    data = (out / "sealmetrics_sources_20250327_20250331.csv").read_bytes()
    assert data.startswith(b"utm_source,entrances,engaged_entrances,bounce_rate,")
    assert sum(int(r["entrances"]) for r in csv_rows(data)) == 500


@pytest.mark.parametrize("export_type", list(EXPORT_TYPES))
@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
def test_export_to_stdout_is_the_same_bytes_as_the_file(
    seeded: Path, out: Path, export_type: str, fmt: str
) -> None:
    to_file = export(seeded, "--type", export_type, "--format", fmt, "--silent")
    assert to_file.exit_code == 0, to_file.output
    [name] = listing(out)
    assert name == f"sealmetrics_{export_type}_20250327_20250331.{fmt}"
    assert to_file.stderr == ""  # --silent
    to_stdout = export(seeded, "--type", export_type, "--format", fmt, "-o", "-")
    assert to_stdout.exit_code == 0, to_stdout.output
    assert to_stdout.stdout_bytes == (out / name).read_bytes()
    assert len(to_stdout.stdout_bytes) > 100
    assert listing(out) == [name]  # stdout wrote no file


def test_export_into_a_folder(seeded: Path, out: Path, tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    result = export(seeded, "--type", "countries", "-o", str(folder), "--silent")
    assert result.exit_code == 0, result.output
    assert listing(folder) == ["sealmetrics_countries_20250327_20250331.csv"]
    assert listing(out) == []


def test_export_to_a_named_file(seeded: Path, out: Path) -> None:
    (out / "sub").mkdir()
    result = export(seeded, "--type", "devices", "-o", "sub/devices.csv", "--silent")
    assert result.exit_code == 0, result.output
    assert listing(out) == ["sub"]
    assert listing(out / "sub") == ["devices.csv"]
    assert (out / "sub" / "devices.csv").read_bytes().startswith(b"device_type,")


def test_export_json(seeded: Path, out: Path) -> None:
    result = export(seeded, "--type", "conversions", "--format", "json", "-o", "-")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout_bytes)
    assert isinstance(rows, list) and rows
    assert list(rows[0]) == EXPORT_TYPES["conversions"].header
    assert isinstance(rows[0]["amount"], int | float)
    csv_result = export(seeded, "--type", "conversions", "-o", "-")
    assert len(csv_rows(csv_result.stdout_bytes)) == len(rows)


def countries(db: Path, *args: str) -> dict[str, int]:
    result = export(db, "--type", "countries", "-o", "-", *args)
    assert result.exit_code == 0, result.output
    return {r["country"]: int(r["entrances"]) for r in csv_rows(result.stdout_bytes)}


def test_repeated_filter_makes_a_list(seeded: Path, out: Path) -> None:
    everything = countries(seeded)
    top = sorted(everything, key=lambda c: -everything[c])[:2]
    assert len(top) == 2 and len(everything) > 2
    one = countries(seeded, "--filter", f"country={top[0]}")
    two = countries(seeded, "--filter", f"country={top[0]}", "--filter", f"country={top[1]}")
    assert one == {top[0]: everything[top[0]]}
    assert two == {c: everything[c] for c in top}
    # Different keys are ANDed.
    mobile = countries(seeded, "--filter", f"country={top[0]}", "--filter", "device_type=mobile")
    assert set(mobile) == {top[0]}
    assert 0 < mobile[top[0]] < everything[top[0]]


def test_filter_value_may_hold_an_equals_sign(seeded: Path, out: Path) -> None:
    assert countries(seeded, "--filter", "utm_campaign=a=b") == {}


def test_advanced_filter(seeded: Path, out: Path) -> None:
    def pages(*args: str) -> list[dict[str, str]]:
        result = export(seeded, "--type", "pages", "-o", "-", *args)
        assert result.exit_code == 0, result.output
        return csv_rows(result.stdout_bytes)

    everything = pages()
    blog = pages("--advanced", "path:contains:/blog/")
    assert blog and len(blog) < len(everything)
    assert all("/blog/" in r["path"] for r in blog)
    # A blog page's row counts only events on (or landing on) that page: the filter keeps them all.
    assert blog == [r for r in everything if "/blog/" in r["path"]]
    # The same expression through --filter advanced_filters=... gives the same rows.
    assert pages("--filter", "advanced_filters=path:contains:/blog/") == blog
    # With a simple filter too: ANDed.
    both = pages("--advanced", "path:contains:/blog/", "--filter", "device_type=mobile")
    assert sum(int(r["views"]) for r in both) < sum(int(r["views"]) for r in blog)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--type", "nope"], "'nope'"),
        (["--type", "sources", "--format", "xml"], "'xml'"),
        (["--type", "sources", "--filter", "colour=red"], "'colour'"),
        (["--type", "sources", "--filter", "country"], "'country'"),
        (["--type", "sources", "--filter", "=ES"], "'=ES'"),
        (["--type", "sources", "--filter", "country="], "filters.country"),
        (["--type", "sources", "--advanced", "colour:eq:red"], "'colour'"),
        (["--type", "sources", "--advanced", "path:like:/a"], "'like'"),
        (["--type", "sources", "--advanced", "path:eq"], "'path:eq'"),
        (["--type", "sources", "--advanced", "country:eq:ES,path:regex:("], "'path:regex:('"),
        (["--type", "sources", "--advanced", "path:in:a||b"], "'path:in:a||b'"),
        (
            ["--type", "sources", "--advanced", "path:eq:/", "--filter", "advanced_filters=path:eq:/"],
            "--advanced",
        ),
        (["--type", "sources", "--from", "2025-02-30"], "2025-02-30"),
        (["--type", "sources", "--to", "2025-1-1"], "2025-1-1"),
        (["--type", "sources", "--from", "2025-04-01"], "after"),
        (["--type", "sources", "--from", "yesterday"], "yesterday"),
        (["--type", "sources", "--from", "2015-01-01"], "at most"),
        (["--type", "sources", "--site", "nope"], "site 'nope' not found"),
        (["--type", "sources", "--site", "Demo"], "'Demo'"),
    ],
)
@pytest.mark.parametrize("output", [None, ".", "-", "named.csv"])
def test_bad_export_is_one_error_line_and_leaves_no_file(
    seeded: Path, out: Path, args: list[str], expected: str, output: str | None
) -> None:
    # Later options win in click, so these override RANGE where given.
    command = ["export", "--site", "demo", *RANGE, *args]
    if output is not None:
        command += ["-o", output]
    before = listing(out)
    result = run(seeded, *command)
    assert_cli_error(result, expected)
    assert result.stdout_bytes == b""
    assert listing(out) == before


def test_unwritable_output_is_one_error_line(seeded: Path, out: Path) -> None:
    (out / "a-file").write_text("not a folder")
    result = export(seeded, "--type", "sources", "--silent", "-o", "a-file/out.csv")
    assert_cli_error(result, "a-file")
    assert listing(out) == ["a-file"]
    assert (out / "a-file").read_text() == "not a folder"


def test_export_errors_leave_the_database_untouched(seeded: Path, out: Path) -> None:
    before = analytics(seeded)
    assert_cli_error(export(seeded, "--type", "sources", "--advanced", "path:regex:["), "invalid regex")
    assert analytics(seeded) == before


def test_the_command_line_starts_without_the_demo_ingestion_or_regex_modules() -> None:
    """`sealexports export` pays for what it imports at every start: the demo generator (which
    builds its tables on import), the ingestion code, `regex` and pycountry wait for what uses them."""
    import subprocess
    import sys

    from sealexports import demo
    from sealexports.cli import data

    code = "import sys, sealexports.cli; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "sealexports.cli" in loaded
    for module in ("sealexports.demo", "sealexports.ingest", "regex", "pycountry"):
        assert module not in loaded
    assert (data.DEMO_DAYS, data.DEMO_VISITS) == (demo.DEFAULT_DAYS, demo.DEFAULT_VISITS)


def test_an_import_starts_without_the_job_runner_or_the_user_agent_rules() -> None:
    """`sealexports import` loads the command line and the ingestion code; the job runner (and
    its metrics) wait for the schedule commands, ua-parser for the first User-Agent."""
    import subprocess
    import sys

    code = "import sys, sealexports.cli, sealexports.ingest; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "sealexports.ingest.importer" in loaded
    for module in ("sealexports.jobs.runner", "prometheus_client", "ua_parser", "sqlite_utils", "pandas"):
        assert module not in loaded


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize("export_type", ["conversions", "microconversions"])
def test_a_raw_export_in_two_processes_is_the_same_bytes(
    seeded: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, export_type: str, fmt: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from sealexports.exports import raw, split
    from sealexports.exports.request import build_request
    from sealexports.storage.database import transaction
    from sealexports.storage.visits import Conversion, PageView, Visit, insert_visits

    db = tmp_path / "hostile.db"
    conn = connect(db, migrate=False)
    with contextlib.closing(sqlite3.connect(seeded)) as source:
        source.backup(conn)
    at = datetime(2025, 3, 31, 12, tzinfo=UTC)  # the later half: written by the second process
    odd = Conversion(at, "=cmd", '/a,"b"', "-1", 5, '{"k": "x\\u0000y"}')
    with transaction(conn):
        insert_visits(
            conn,
            accounts.get_site(conn, "demo"),
            [
                Visit(
                    pages=[PageView(at, '/a,"b"')],
                    utm_source="@src\r",
                    conversions=[odd],
                    microconversions=[odd],
                )
            ],
        )
    req = build_request("demo", export_type, fmt, "2025-03-27", "2025-03-31")
    monkeypatch.setattr(split, "MIN_ROWS", 0)
    monkeypatch.setattr(raw, "CHUNK_ROWS", 4)  # pages of runs of days and of parts of a day, in both
    from sealexports.cli import data

    monkeypatch.setattr(data, "_idle_core", lambda cores: True)  # as on a quiet machine
    parts = split.halves(conn, req)
    assert parts is not None
    first, later = parts
    assert (first.date_from, later.date_to) == (req.date_from, req.date_to)
    assert later.date_from - first.date_to == timedelta(days=1)
    counts = raw.day_counts(conn, req)
    rows = [
        sum(n for d, n in counts.items() if p.date_from.isoformat() <= d <= p.date_to.isoformat())
        for p in parts
    ]
    assert abs(rows[0] - rows[1]) <= max(counts.values())  # the nearest cut between days
    conn.close()
    whole = run(db, "export", "--site", "demo", *RANGE, "--type", export_type, "--format", fmt, "-o", "-")
    halves = run(db, "export", "--site", "demo", *RANGE, "--type", export_type, "--format", fmt, "-o", "x")
    assert halves.exit_code == 0, halves.output
    assert (out / "x").read_bytes() == whole.stdout_bytes
    assert b"'=cmd" in whole.stdout_bytes or fmt == "json"
    assert listing(out) == ["x"]  # the second process's part is gone


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (RuntimeError("boom"), "the second export process failed: RuntimeError: boom"),
        (InvalidRequest("the part's own bad input"), "the part's own bad input"),
        (SystemExit(3), "the second export process failed: SystemExit: 3"),
    ],
)
def test_a_failed_second_process_is_one_error_line_and_no_file(
    seeded: Path, out: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException, message: str
) -> None:
    from sealexports.cli import data
    from sealexports.exports import split

    def fail(*args: object) -> int:
        raise failure

    monkeypatch.setattr(split, "MIN_ROWS", 0)
    monkeypatch.setattr(data, "_idle_core", lambda cores: True)
    monkeypatch.setattr(split, "write_part", fail)  # in the forked process
    result = run(seeded, "export", "--site", "demo", *RANGE, "--type", "conversions", "-o", "x", "--silent")
    assert assert_cli_error(result, message)
    assert listing(out) == []


def test_a_write_between_the_two_starts_leaves_the_export_to_one_process(
    seeded: Path, out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second process commits a write just before it begins reading: the two would not see
    the same rows, so the first writes the whole export (the second's part would fail here)."""
    from sealexports.cli import data
    from sealexports.exports import split
    from sealexports.storage.database import begin_reading

    db = tmp_path / "racing.db"
    with (
        contextlib.closing(sqlite3.connect(seeded)) as source,
        contextlib.closing(sqlite3.connect(db)) as copy,
    ):
        source.backup(copy)

    def write_then_begin(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('race', '')")
        begin_reading(conn)

    def fail(*args: object) -> int:
        raise RuntimeError("the second part was used")

    whole = run(db, "export", "--site", "demo", *RANGE, "--type", "conversions", "-o", "-")
    monkeypatch.setattr(split, "MIN_ROWS", 0)
    monkeypatch.setattr(data, "_idle_core", lambda cores: True)
    monkeypatch.setattr(split, "begin_reading", write_then_begin)
    monkeypatch.setattr(split, "write_part", fail)
    result = run(db, "export", "--site", "demo", *RANGE, "--type", "conversions", "-o", "x", "--silent")
    assert result.exit_code == 0, result.output
    assert (out / "x").read_bytes() == whole.stdout_bytes
    assert listing(out) == ["x"]


def test_a_second_process_killed_is_one_error_line_and_no_file(
    seeded: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sealexports.cli import data
    from sealexports.exports import split

    monkeypatch.setattr(split, "MIN_ROWS", 0)
    monkeypatch.setattr(data, "_idle_core", lambda cores: True)
    monkeypatch.setattr(split, "write_part", lambda *args: os.kill(os.getpid(), signal.SIGKILL))
    result = run(seeded, "export", "--site", "demo", *RANGE, "--type", "conversions", "-o", "x", "--silent")
    assert assert_cli_error(result, "the second export process ended unexpectedly")
    assert listing(out) == []
