"""Settings: defaults without a file, a TOML file, `SEALEXPORTS_<KEY>` overrides, and bad values."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from sealexports.config import DEFAULT_PLANS, PLAN_NAMES, Plan, Settings, load_settings
from sealexports.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert s.database == Path("sealexports.db")
    assert s.exports_dir == Path("exports")
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.public_url == ""  # unset: download links follow each request
    assert s.trusted_proxies == ("127.0.0.1", "::1")
    assert s.root_path == ""
    assert s.sync_row_limit == 10_000
    assert s.download_ttl_seconds == 86_400
    assert s.workers == 2
    assert s.secret_key == ""
    assert s.secret_key_file == ""
    assert (s.limit_concurrency, s.timeout_keep_alive) == (256, 5)
    gib = 1024**3
    assert dict(s.plans) == {
        "free": Plan(concurrent_exports=1, max_rows=100_000, requests_per_minute=240, max_stored_bytes=gib),
        "pro": Plan(
            concurrent_exports=3, max_rows=1_000_000, requests_per_minute=480, max_stored_bytes=10 * gib
        ),
        "enterprise": Plan(
            concurrent_exports=10, max_rows=0, requests_per_minute=10_000, max_stored_bytes=100 * gib
        ),
    }


def test_defaults_ignore_the_process_environment_when_environ_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALEXPORTS_PORT", "9999")
    assert load_settings(environ={}).port == 8000
    assert load_settings().port == 9999  # environ=None reads os.environ


def test_queue_lives_beside_the_database() -> None:
    s = Settings(database=Path("/var/lib/x/data.db"))
    assert s.queue_path == Path("/var/lib/x/data.db.queue")


def test_file_given_as_argument(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        database = "/srv/data.db"
        exports_dir = "/srv/exports"
        host = "0.0.0.0"
        port = 9000
        public_url = "https://exports.example.com/"
        sync_row_limit = 500
        download_ttl_seconds = 60
        workers = 4
        secret_key = "s3cret"
        trusted_proxies = ["10.1.2.3", "fd00::/8"]
        root_path = "/exports/"
        """,
    )
    s = load_settings(path, environ={})
    assert s.trusted_proxies == ("10.1.2.3", "fd00::/8")
    assert s.root_path == "/exports"  # trailing slash dropped
    assert s.database == Path("/srv/data.db")
    assert s.exports_dir == Path("/srv/exports")
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.public_url == "https://exports.example.com"  # trailing slash dropped
    assert (s.sync_row_limit, s.download_ttl_seconds, s.workers) == (500, 60, 4)
    assert s.secret_key == "s3cret"
    assert dict(s.plans) == DEFAULT_PLANS


def test_file_given_by_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 8123\n")
    assert load_settings(environ={"SEALEXPORTS_CONFIG": str(path)}).port == 8123


def test_argument_beats_environment_config_file(tmp_path: Path) -> None:
    arg = write(tmp_path, "port = 1111\n", "arg.toml")
    env = write(tmp_path, "port = 2222\n", "env.toml")
    assert load_settings(arg, environ={"SEALEXPORTS_CONFIG": str(env)}).port == 1111


@pytest.mark.parametrize(
    ("var", "raw", "attr", "expected"),
    [
        ("SEALEXPORTS_DATABASE", "/tmp/env.db", "database", Path("/tmp/env.db")),
        ("SEALEXPORTS_EXPORTS_DIR", "/tmp/out", "exports_dir", Path("/tmp/out")),
        ("SEALEXPORTS_HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("SEALEXPORTS_PORT", "8443", "port", 8443),
        ("SEALEXPORTS_PUBLIC_URL", "https://x.example", "public_url", "https://x.example"),
        ("SEALEXPORTS_SYNC_ROW_LIMIT", "5000", "sync_row_limit", 5000),
        ("SEALEXPORTS_DOWNLOAD_TTL_SECONDS", "3600", "download_ttl_seconds", 3600),
        ("SEALEXPORTS_WORKERS", "8", "workers", 8),
        ("SEALEXPORTS_SECRET_KEY", "abc", "secret_key", "abc"),
        (
            "SEALEXPORTS_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.0.2.7",
            "trusted_proxies",
            ("10.0.0.0/8", "192.0.2.7"),
        ),
        ("SEALEXPORTS_TRUSTED_PROXIES", "", "trusted_proxies", ()),
        ("SEALEXPORTS_ROOT_PATH", "/stats/exports/", "root_path", "/stats/exports"),
        ("SEALEXPORTS_PUBLIC_URL", "", "public_url", ""),
    ],
)
def test_environment_overrides_beat_the_file(
    tmp_path: Path, var: str, raw: str, attr: str, expected: object
) -> None:
    path = write(
        tmp_path,
        """
        database = "file.db"
        exports_dir = "file-exports"
        host = "10.0.0.1"
        port = 7000
        public_url = "http://file.example"
        sync_row_limit = 70
        download_ttl_seconds = 7
        workers = 3
        secret_key = "from-file"
        trusted_proxies = ["172.16.0.1"]
        root_path = "/from-file"
        """,
    )
    from_file = load_settings(path, environ={})
    assert getattr(from_file, attr) != expected
    s = load_settings(path, environ={var: raw})
    assert getattr(s, attr) == expected
    # Only that key changed.
    assert s.replace(**{attr: getattr(from_file, attr)}) == from_file


def test_zero_workers_means_serve_runs_none(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "workers = 0\n"), environ={}).workers == 0
    assert load_settings(environ={"SEALEXPORTS_WORKERS": "0"}).workers == 0


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"SEALEXPORTS_NOT_A_KEY": "1", "SEALEXPORTS_PLANS": "x", "PORT": "1"}
    assert load_settings(environ=env) == Settings()


def test_plan_tables_merge_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [plans.free]
        max_rows = 5000

        [plans.enterprise]
        concurrent_exports = 20
        requests_per_minute = 1
        """,
    )
    plans = load_settings(path, environ={}).plans
    gib = 1024**3
    assert plans["free"] == Plan(
        concurrent_exports=1, max_rows=5000, requests_per_minute=240, max_stored_bytes=gib
    )
    assert plans["pro"] == DEFAULT_PLANS["pro"]
    assert plans["enterprise"] == Plan(
        concurrent_exports=20, max_rows=0, requests_per_minute=1, max_stored_bytes=100 * gib
    )
    # The module-level defaults were not mutated by the merge.
    assert DEFAULT_PLANS["free"].max_rows == 100_000


def test_example_config_loads_and_equals_the_defaults() -> None:
    example = REPO_ROOT / "config.example.toml"
    assert load_settings(example, environ={}) == Settings()


def test_example_config_documents_every_key_with_its_default() -> None:
    """Every Settings field has a line `key = default  # meaning` (commented out where the default
    is best left unset), and every plan table gives every Plan field its default."""
    text = (REPO_ROOT / "config.example.toml").read_text(encoding="utf-8")
    lines: dict[str, str] = {}
    for line in text.splitlines():
        setting = line.removeprefix("# ")
        key, sep, _ = setting.partition(" = ")
        if sep and key.isidentifier() and not line.startswith("#  "):
            lines.setdefault(key, setting)
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.name == "plans":
            continue
        assert f.name in lines, f"config.example.toml does not document {f.name}"
        value, sep, meaning = lines[f.name].partition("#")
        assert sep and meaning.strip(), f"{f.name}: no comment saying what it means"
        documented = tomllib.loads(value)[f.name]
        default = getattr(defaults, f.name)
        expected = list(default) if isinstance(default, tuple) else default
        assert documented == (str(expected) if isinstance(default, Path) else expected), f.name
    plans = tomllib.loads(text)["plans"]
    assert set(plans) == set(PLAN_NAMES)
    for name in PLAN_NAMES:
        assert set(plans[name]) == {f.name for f in dataclasses.fields(Plan)}, name
        assert Plan(**plans[name]) == DEFAULT_PLANS[name], name


# --- Bad values: always ConfigError, and the message names the key ------------------------------


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"SEALEXPORTS_PORT": "eighty"}, "SEALEXPORTS_PORT"),
        ({"SEALEXPORTS_PORT": "80.5"}, "SEALEXPORTS_PORT"),
        ({"SEALEXPORTS_PORT": ""}, "SEALEXPORTS_PORT"),
        ({"SEALEXPORTS_SYNC_ROW_LIMIT": "10k"}, "SEALEXPORTS_SYNC_ROW_LIMIT"),
        ({"SEALEXPORTS_DOWNLOAD_TTL_SECONDS": "1d"}, "SEALEXPORTS_DOWNLOAD_TTL_SECONDS"),
        ({"SEALEXPORTS_WORKERS": "two"}, "SEALEXPORTS_WORKERS"),
        ({"SEALEXPORTS_SYNC_ROW_LIMIT": "0"}, "sync_row_limit"),
        ({"SEALEXPORTS_SYNC_ROW_LIMIT": "-5"}, "sync_row_limit"),
        ({"SEALEXPORTS_DOWNLOAD_TTL_SECONDS": "0"}, "download_ttl_seconds"),
        ({"SEALEXPORTS_WORKERS": "-1"}, "workers"),
        ({"SEALEXPORTS_PORT": "0"}, "port"),
        ({"SEALEXPORTS_LIMIT_CONCURRENCY": "0"}, "limit_concurrency"),
        ({"SEALEXPORTS_TIMEOUT_KEEP_ALIVE": "soon"}, "SEALEXPORTS_TIMEOUT_KEEP_ALIVE"),
        ({"SEALEXPORTS_PORT": "65536"}, "port"),
        ({"SEALEXPORTS_DATABASE": ""}, "database"),
        ({"SEALEXPORTS_EXPORTS_DIR": ""}, "exports_dir"),
        ({"SEALEXPORTS_PUBLIC_URL": "exports.example.com"}, "public_url"),
        ({"SEALEXPORTS_TRUSTED_PROXIES": "10.0.0.1,proxy.local"}, "trusted_proxies"),
        ({"SEALEXPORTS_ROOT_PATH": "exports"}, "root_path"),
        ({"SEALEXPORTS_LOG_FORMAT": "xml"}, "log_format"),
        ({"SEALEXPORTS_LOG_LEVEL": "verbose"}, "log_level"),
        ({"SEALEXPORTS_QUERY_TIMEOUT_SECONDS": "soon"}, "SEALEXPORTS_QUERY_TIMEOUT_SECONDS"),
        ({"SEALEXPORTS_QUERY_TIMEOUT_SECONDS": "0"}, "query_timeout_seconds"),
        ({"SEALEXPORTS_QUERY_TIMEOUT_SECONDS": "nan"}, "query_timeout_seconds"),
        ({"SEALEXPORTS_JOB_TIMEOUT_SECONDS": "inf"}, "job_timeout_seconds"),
        ({"SEALEXPORTS_JOB_TIMEOUT_SECONDS": "-1"}, "job_timeout_seconds"),
        ({"SEALEXPORTS_CSV_FORMULA_GUARD": "maybe"}, "SEALEXPORTS_CSV_FORMULA_GUARD"),
        ({"SEALEXPORTS_CSV_FORMULA_GUARD": ""}, "SEALEXPORTS_CSV_FORMULA_GUARD"),
    ],
)
def test_bad_environment_values(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(environ=environ)
    assert named in e.value.message


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("port = 65536", "'port'"),
        ("port = 0", "'port'"),
        ("port = -1", "'port'"),
        ('port = "8000"', "'port'"),
        ("port = 8000.0", "'port'"),
        ("port = true", "'port'"),
        ("workers = false", "'workers'"),
        ('csv_formula_guard = "false"', "'csv_formula_guard'"),
        ("csv_formula_guard = 0", "'csv_formula_guard'"),
        ("sync_row_limit = 0", "'sync_row_limit'"),
        ("sync_row_limit = -1", "'sync_row_limit'"),
        ("download_ttl_seconds = 0", "'download_ttl_seconds'"),
        ("download_ttl_seconds = -86400", "'download_ttl_seconds'"),
        ("workers = -2", "'workers'"),
        ("database = 1", "'database'"),
        ('database = ""', "'database'"),
        ("host = 127", "'host'"),
        ("secret_key = 1", "'secret_key'"),
        ('public_url = "ftp://example.com"', "'public_url'"),
        ('public_url = "127.0.0.1:8000"', "'public_url'"),
        ("public_url = 8000", "'public_url'"),
        ('trusted_proxies = "127.0.0.1"', "'trusted_proxies'"),
        ('trusted_proxies = ["10.0.0.0/33"]', "'trusted_proxies'"),
        ("trusted_proxies = [1]", "'trusted_proxies'"),
        ('root_path = "/a b"', "'root_path'"),
        ('root_path = "/x?y=1"', "'root_path'"),
        ('root_path = "https://example.com/x"', "'root_path'"),
        ("databse = 'typo.db'", "'databse'"),
        ("[server]\nport = 1", "'server'"),
        ("plans = 3", "'plans'"),
        ("[plans.gold]\nmax_rows = 1", "plans.gold"),
        ("[plans]\nfree = 1", "plans.free"),
        ("[plans.free]\nmax_row = 1", "plans.free.max_row"),
        ("[plans.free]\nmax_rows = -1", "plans.free.max_rows"),
        ("[plans.pro]\nconcurrent_exports = 0", "plans.pro.concurrent_exports"),
        ("[plans.pro]\nconcurrent_exports = true", "plans.pro.concurrent_exports"),
        ('[plans.enterprise]\nrequests_per_minute = "10"', "plans.enterprise.requests_per_minute"),
        ("[plans.enterprise]\nrequests_per_minute = 1.5", "plans.enterprise.requests_per_minute"),
        ("query_timeout_seconds = 0", "'query_timeout_seconds'"),
        ('query_timeout_seconds = "10"', "'query_timeout_seconds'"),
        ("query_timeout_seconds = true", "'query_timeout_seconds'"),
        ("job_timeout_seconds = -0.5", "'job_timeout_seconds'"),
    ],
)
def test_bad_file_values(tmp_path: Path, toml: str, named: str) -> None:
    path = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as e:
        load_settings(path, environ={})
    assert named in e.value.message


def test_env_override_of_another_key_does_not_hide_a_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "sync_row_limit = 0\n")
    with pytest.raises(ConfigError, match="'sync_row_limit'"):
        load_settings(path, environ={"SEALEXPORTS_PORT": "9000"})


def test_environment_override_replaces_a_bad_file_value(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 0\n")
    assert load_settings(path, environ={"SEALEXPORTS_PORT": "9000"}).port == 9000


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load_settings(missing, environ={})
    assert str(missing) in e.value.message


def test_missing_file_from_environment_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "env-nope.toml"
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"SEALEXPORTS_CONFIG": str(missing)})
    assert str(missing) in e.value.message


def test_directory_as_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path, environ={})
    assert str(tmp_path) in e.value.message


@pytest.mark.parametrize(
    "content",
    [
        b"port = \n",
        b"port = 8000\nport = 8001\n",
        b"[plans.free\n",
        b"database = 'unterminated\n",
        b"port = 8000\n\xff\xfe = 1\n",  # not UTF-8
    ],
)
def test_invalid_toml(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_settings(path, environ={})
    assert "not valid TOML" in e.value.message
    assert str(path) in e.value.message


def test_logging_and_metrics_settings_from_the_environment() -> None:
    environ = {
        "SEALEXPORTS_LOG_FORMAT": "json",
        "SEALEXPORTS_LOG_LEVEL": "debug",
        "SEALEXPORTS_METRICS_TOKEN": "t",
    }
    settings = load_settings(environ=environ)
    assert (settings.log_format, settings.log_level, settings.metrics_token) == ("json", "debug", "t")
    assert (Settings().log_format, Settings().log_level, Settings().metrics_token) == ("text", "info", "")


def test_timeouts_take_fractions_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "query_timeout_seconds = 2.5\njob_timeout_seconds = 600\n")
    settings = load_settings(path, environ={"SEALEXPORTS_QUERY_TIMEOUT_SECONDS": "0.25"})
    assert settings.query_timeout_seconds == 0.25
    assert settings.job_timeout_seconds == 600.0
    assert load_settings(environ={}).query_timeout_seconds == 10.0


@pytest.mark.parametrize(
    ("raw", "value"), [("false", False), ("0", False), ("No", False), ("true", True), ("1", True)]
)
def test_csv_formula_guard_is_on_unless_turned_off(tmp_path: Path, raw: str, value: bool) -> None:
    assert Settings().csv_formula_guard is True
    assert load_settings(environ={"SEALEXPORTS_CSV_FORMULA_GUARD": raw}).csv_formula_guard is value
    path = write(tmp_path, f"csv_formula_guard = {str(value).lower()}\n")
    assert load_settings(path, environ={}).csv_formula_guard is value
