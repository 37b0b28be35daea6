"""The `sealexports` command run in-process (click's CliRunner) on a database file."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from sealexports.cli import cli


def run(db: Path, *args: str, env: dict[str, str] | None = None, input: bytes | str | None = None) -> Result:
    """`sealexports --db DB ARGS...`; exceptions other than click's propagate."""
    return CliRunner().invoke(cli, ["--db", str(db), *args], env=env, input=input, catch_exceptions=False)
