"""Settings: defaults that need no file, a TOML file, and `SEALEXPORTS_<KEY>` overrides.

Settings are built once at the edge (CLI) and passed in; nothing reads a cached global.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealexports.errors import ConfigError
from sealexports.logs import FORMATS, LEVELS

PLAN_NAMES = ("free", "pro", "enterprise")
ENV_PREFIX = "SEALEXPORTS_"
MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class Plan:
    concurrent_exports: int
    max_rows: int  # 0 = unlimited
    requests_per_minute: int
    max_stored_bytes: int = 0  # bytes of live export files an account may keep; 0 = unlimited


GIB = 1024**3
DEFAULT_PLANS = {
    "free": Plan(concurrent_exports=1, max_rows=100_000, requests_per_minute=240, max_stored_bytes=1 * GIB),
    "pro": Plan(concurrent_exports=3, max_rows=1_000_000, requests_per_minute=480, max_stored_bytes=10 * GIB),
    "enterprise": Plan(
        concurrent_exports=10, max_rows=0, requests_per_minute=10_000, max_stored_bytes=100 * GIB
    ),
}


@dataclass(frozen=True)
class Settings:
    database: Path = Path("sealexports.db")
    exports_dir: Path = Path("exports")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""  # empty: download links follow each request (see trusted_proxies)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")  # X-Forwarded-*/Forwarded from these only
    root_path: str = ""  # path prefix the service is reached under, e.g. "/sealexports"
    cors_origins: tuple[str, ...] = ()  # web origins whose pages may call the API ("*": any); none by default
    sync_row_limit: int = 10_000
    download_ttl_seconds: int = 86_400
    workers: int = 2  # 0: `serve` runs no workers (run `sealexports worker`)
    job_lease_seconds: int = 30  # a running job is taken over by another process this long after its own died
    query_timeout_seconds: float = 10.0  # each request's queries (estimate, stream, sync export, list)
    job_timeout_seconds: float = 3600.0  # a background export, start to finish
    secret_key: str = ""  # empty: read from secret_key_file, else generated once and kept in the database
    secret_key_file: str = ""  # a file holding the signing secret (kept out of the database)
    limit_concurrency: int = 256  # uvicorn: connections + tasks at once; past it, 503
    timeout_keep_alive: int = 5  # uvicorn: seconds an idle keep-alive connection stays open
    log_level: str = "info"  # debug, info, warning, error
    log_format: str = "text"  # text or json (one object a line)
    metrics_token: str = ""  # empty: no /metrics; else it needs Authorization: Bearer <token>
    csv_formula_guard: bool = True  # CSV text cells starting with = + - @ tab CR get a leading '
    webhooks_allow_private: bool = False  # true: webhooks may go to private/loopback addresses (tests)
    webhooks_timeout_seconds: float = 10.0  # each delivery attempt: connect, send, and the answer
    plans: Mapping[str, Plan] = field(default_factory=lambda: dict(DEFAULT_PLANS))

    @property
    def queue_path(self) -> Path:
        """huey's queue lives in a sibling file, away from the analytics database's locks."""
        return self.database.with_name(self.database.name + ".queue")

    def configured_secret(self) -> str:
        """The signing secret the operator gave (`secret_key`, or `secret_key_file`'s content);
        empty if neither: then the one generated and kept in the database signs."""
        if self.secret_key and self.secret_key_file:
            raise ConfigError("give the signing secret once: secret_key or secret_key_file, not both")
        if not self.secret_key_file:
            return self.secret_key
        try:
            secret = Path(self.secret_key_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read secret_key_file {self.secret_key_file}: {e.strerror}") from e
        except UnicodeDecodeError:
            raise ConfigError(f"secret_key_file {self.secret_key_file} is not UTF-8 text") from None
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"secret_key_file {self.secret_key_file} holds {len(secret)} characters; a signing "
                f"secret needs at least {MIN_SECRET_CHARS} (e.g. `openssl rand -base64 32`)"
            )
        return secret

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# Top-level keys and how to read them from TOML values or environment strings.
_MIN = {
    "port": 1, "sync_row_limit": 1, "download_ttl_seconds": 1, "workers": 0,
    "limit_concurrency": 1, "timeout_keep_alive": 1, "job_lease_seconds": 1,
}  # fmt: skip
_PLAN_MIN = {"concurrent_exports": 1, "max_rows": 0, "requests_per_minute": 1, "max_stored_bytes": 0}
_CHOICES = {"log_level": LEVELS, "log_format": FORMATS}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_ROOT_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the TOML file (argument or `SEALEXPORTS_CONFIG`), then env overrides."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    for key in _scalar_keys():
        raw = environ.get(ENV_PREFIX + key.upper())
        if raw is not None:
            data[key] = _from_env(key, raw)
    return settings_from_mapping(data)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    """Validate a parsed mapping; every error names its key."""
    defaults = Settings()
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "plans":
            values["plans"] = _plans(value)
        elif key not in _scalar_keys():
            raise ConfigError(f"unknown config key {key!r}")
        else:
            values[key] = _checked(key, value, type(getattr(defaults, key)))
    return dataclasses.replace(defaults, **values)


def _scalar_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Settings) if f.name != "plans"]


def _checked(key: str, value: Any, kind: type) -> Any:
    if kind is tuple:
        return _origins(key, value) if key == "cors_origins" else _networks(key, value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"config key {key!r} must be a number of seconds above 0, got {value!r}")
        if value == float("inf"):
            raise ConfigError(f"config key {key!r} must be finite, got {value!r}")
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        if value < _MIN.get(key, 0):
            raise ConfigError(f"config key {key!r} must be at least {_MIN.get(key, 0)}, got {value}")
        if key == "port" and value > 65535:
            raise ConfigError(f"config key 'port' must be at most 65535, got {value}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    if issubclass(kind, Path):
        if not value:
            raise ConfigError(f"config key {key!r} must not be empty")
        return Path(value)
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key == "public_url":
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"config key 'public_url' must start with http:// or https://, got {value!r}")
        return value.rstrip("/")
    if key == "root_path":
        root = value.rstrip("/")
        if root and not _ROOT_PATH.fullmatch(root):
            raise ConfigError(
                f"config key 'root_path' must be empty or a path like '/sealexports' "
                f"(letters, digits, . _ ~ -), got {value!r}"
            )
        return root
    return value


def _origins(key: str, value: Any) -> tuple[str, ...]:
    """Web origins as browsers send them (scheme://host[:port], no path), or "*"."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key {key!r} must be a list of origins like 'https://app.example.com'")
    for v in value:
        if v != "*" and not _ORIGIN.fullmatch(v):
            raise ConfigError(
                f"config key {key!r}: {v!r} is not an origin (scheme://host[:port], no path or "
                "trailing slash) nor '*'"
            )
    return tuple(value)


def _networks(key: str, value: Any) -> tuple[str, ...]:
    """A list of IP addresses or CIDR networks, each checked."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key {key!r} must be a list of IP addresses or networks, got {value!r}")
    for v in value:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ConfigError(f"config key {key!r}: {v!r} is not an IP address or network") from None
    return tuple(value)


def _from_env(key: str, raw: str) -> Any:
    if type(getattr(Settings(), key)) is tuple:  # comma-separated; empty: an empty list
        return [v.strip() for v in raw.split(",") if v.strip()]
    if type(getattr(Settings(), key)) is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable {ENV_PREFIX}{key.upper()} must be a number, got {raw!r}"
            ) from None
    if type(getattr(Settings(), key)) is bool:
        flag = raw.strip().lower()
        if flag not in _BOOLEANS:
            raise ConfigError(
                f"environment variable {ENV_PREFIX}{key.upper()} must be true or false, got {raw!r}"
            )
        return _BOOLEANS[flag]
    if type(getattr(Settings(), key)) is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable {ENV_PREFIX}{key.upper()} must be an integer, got {raw!r}"
            ) from None
    return raw


def _plans(value: Any) -> dict[str, Plan]:
    if not isinstance(value, Mapping):
        raise ConfigError("config key 'plans' must be a table")
    plans = dict(DEFAULT_PLANS)
    for name, limits in value.items():
        if name not in PLAN_NAMES:
            raise ConfigError(f"unknown plan 'plans.{name}' (expected one of {', '.join(PLAN_NAMES)})")
        if not isinstance(limits, Mapping):
            raise ConfigError(f"config key 'plans.{name}' must be a table")
        fields = dataclasses.asdict(plans[name])
        for k, v in limits.items():
            key = f"plans.{name}.{k}"
            if k not in fields:
                raise ConfigError(f"unknown config key {key!r}")
            if isinstance(v, bool) or not isinstance(v, int) or v < _PLAN_MIN[k]:
                raise ConfigError(f"config key {key!r} must be an integer >= {_PLAN_MIN[k]}, got {v!r}")
            fields[k] = v
        plans[name] = Plan(**fields)
    return plans
