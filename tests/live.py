"""A real `sealexports serve` in a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop the server; its exit status (uvicorn re-raises SIGTERM after a clean shutdown)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    db: Path,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    config: Path | None = None,
    serve_args: tuple[str, ...] = (),
) -> Server:
    """Start the server on `db` (`serve --port P *serve_args`) and wait until /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"server-{port}.log"
    full_env = {
        **os.environ,
        "SEALEXPORTS_EXPORTS_DIR": str(workdir / "exports"),
        "SEALEXPORTS_PUBLIC_URL": url,
        **(env or {}),
    }
    args = [sys.executable, "-m", "sealexports", "--db", str(db)]
    if config:
        args += ["--config", str(config)]
    process = subprocess.Popen(
        [*args, "serve", "--port", str(port), *serve_args],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 (the child keeps it)
    )
    if not wait_healthy(url, process, seconds=30):
        process.kill()
        raise RuntimeError("server did not start:\n" + log.read_text())
    return Server(url, process, log)


def wait_healthy(url: str, process: subprocess.Popen[bytes], *, seconds: float) -> bool:
    """Whether `url`/healthz answered 200 before `seconds` passed and while `process` ran."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    return False


@contextmanager
def running(
    db: Path,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    config: Path | None = None,
    serve_args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """start(), and the server killed at the end of the block."""
    server = start(db, workdir, env=env, config=config, serve_args=serve_args)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_worker(db: Path, workdir: Path, *, env: dict[str, str] | None = None) -> Worker:
    """Start `sealexports worker` on `db` (exports in workdir/exports) and wait until it runs."""
    log = workdir / f"worker-{len(list(workdir.glob('worker-*.log')))}.log"
    full_env = {**os.environ, "SEALEXPORTS_EXPORTS_DIR": str(workdir / "exports"), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "sealexports", "--db", str(db), "worker"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 (the child keeps it)
    )
    deadline = time.monotonic() + 30
    while "worker running" not in log.read_text().lower():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("worker did not start:\n" + log.read_text())
        time.sleep(0.05)
    return Worker(process, log)
