"""`export -o`: where the bytes go. FIFOs and devices are written in place (never renamed over),
folders get the default file name, a missing folder is an error, and a reader that stops early
(`| head`) ends the export quietly."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import Result

from tests.commands import run

SEED = ["seed", "--site", "demo", "--days", "5", "--visits", "8000", "--end", "2025-03-31", "--silent"]
RANGE = ["--from", "2025-03-27", "--to", "2025-03-31"]
NAME = "sealmetrics_microconversions_20250327_20250331.csv"


def export(db: Path, *args: str) -> Result:
    return run(db, "export", "--site", "demo", "--type", "microconversions", *RANGE, "--silent", *args)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("output") / "seeded.db"
    assert run(db, *SEED).exit_code == 0
    return db


@pytest.fixture(scope="module")
def expected(seeded: Path) -> bytes:
    """The export's bytes, through stdout."""
    result = export(seeded, "-o", "-")
    assert result.exit_code == 0, result.output
    assert len(result.stdout_bytes) > 256 * 1024  # more than a pipe holds, for the `| head` test
    return result.stdout_bytes


def test_export_into_a_fifo_writes_it_in_place(seeded: Path, expected: bytes, out: Path) -> None:
    fifo = out / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = export(seeded, "-o", str(fifo))
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert received == [expected]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # the rename made it a regular file
    assert sorted(os.listdir(out)) == ["pipe"]  # no temporary file left beside it


def test_export_to_dev_null_leaves_the_device(seeded: Path, out: Path) -> None:
    before = os.lstat("/dev/null")
    assert stat.S_ISCHR(before.st_mode)
    result = export(seeded, "-o", "/dev/null")
    assert result.exit_code == 0, result.output
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode), "/dev/null was replaced"
    assert (after.st_rdev, after.st_ino) == (before.st_rdev, before.st_ino)


def _cli(db: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sealexports", "--db", str(db), "export", "--site", "demo"]
    command += ["--type", "microconversions", *RANGE, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_export_to_dev_stdout_writes_the_pipe(seeded: Path, expected: bytes, out: Path) -> None:
    proc = _cli(seeded, "--silent", "-o", "/dev/stdout")
    stdout, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stderr) == (0, b"")
    assert stdout == expected
    assert os.listdir(out) == []


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_a_reader_that_stops_early_ends_the_export_quietly(seeded: Path, output: str) -> None:
    # `sealexports export ... -o - | head -n 1`: head reads a line and closes the pipe.
    proc = _cli(seeded, "--silent", "-o", output)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().endswith(b"\r\n")
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, stderr
    assert stderr == b""


def test_a_fifo_reader_that_stops_early_ends_the_export_quietly(seeded: Path, out: Path) -> None:
    fifo = out / "pipe"
    os.mkfifo(fifo)

    def read_a_little() -> None:
        with open(fifo, "rb") as f:
            f.read(10)

    reader = threading.Thread(target=read_a_little, daemon=True)
    reader.start()
    result = export(seeded, "-o", str(fifo))
    reader.join(timeout=60)
    assert (result.exit_code, result.output) == (0, "")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("output", [".", "./", "sub", "sub/"])
def test_a_folder_gets_the_default_file_name(seeded: Path, expected: bytes, out: Path, output: str) -> None:
    (out / "sub").mkdir()
    result = export(seeded, "-o", output)
    assert result.exit_code == 0, result.output
    folder = out / output
    assert (folder / NAME).read_bytes() == expected


@pytest.mark.parametrize("output", ["missing/", "missing/pages.csv", "missing/deeper/"])
def test_a_missing_folder_is_an_error_and_is_not_created(seeded: Path, out: Path, output: str) -> None:
    result = export(seeded, "-o", output)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: folder ")
    assert "does not exist" in result.stderr
    assert os.listdir(out) == []


def test_a_regular_file_is_still_replaced_atomically(seeded: Path, expected: bytes, out: Path) -> None:
    target = out / "pages.csv"
    target.write_bytes(b"old")
    old_inode = target.stat().st_ino
    os.link(target, out / "hardlink")  # a rename leaves the other name on the old content
    assert export(seeded, "-o", "pages.csv").exit_code == 0
    assert target.read_bytes() == expected
    assert target.stat().st_ino != old_inode
    assert (out / "hardlink").read_bytes() == b"old"
