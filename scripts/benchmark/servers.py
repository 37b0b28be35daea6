"""The servers measured, each a subprocess on loopback started on first use: ours (the real
`sealexports serve`), Datasette over the same file, and a bare Litestar app; and a small
JSON client for our API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchmark.console import log
from benchmark.data import SITE, Data
from benchmark.processes import BIN

SERVE_CONFIG = Path(__file__).with_name("serve.toml")
BARE_APP = Path(__file__).with_name("programs") / "bare_app.py"
READY_SECONDS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, *, body: object = None, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, bytes]:
    """One request: its status and body (an HTTP error status is an answer, not an exception)."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """A server subprocess on loopback, ready when `ready_path` answers 200; stop() ends it."""

    def __init__(
        self, name: str, cmd: list[str], port: int, ready_path: str, log_dir: Path, env: dict[str, str]
    ) -> None:
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start: {self.log_tail()}")
            try:
                if http("GET", self.base + ready_path, timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after {READY_SECONDS} s: {self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-800:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)


class Servers:
    """The servers of one run, over `data`, with their files and logs in `tmp`; close() stops them."""

    def __init__(self, data: Data, tmp: Path) -> None:
        self.data, self.tmp = data, tmp
        self.running: dict[str, Server] = {}
        self._key: str | None = None

    def get(self, name: str) -> Server:
        """ "ours", "datasette" or "bare", started on first use (it runs until close())."""
        if name not in self.running:
            port = free_port()
            log(f"  starting {name} on port {port}")
            self.running[name] = self._start(name, port)
        return self.running[name]

    def _start(self, name: str, port: int) -> Server:
        db, env = str(self.data.db), dict(os.environ)
        if name == "ours":
            self.clear_jobs()
            self.api_key  # noqa: B018 (created before the server starts)
            env["SEALEXPORTS_EXPORTS_DIR"] = str(self.tmp / "exports")
            env["SEALEXPORTS_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            cmd = [*self.cli("--config", str(SERVE_CONFIG)), "serve", "--host", "127.0.0.1", "--port",
                   str(port), "--log-level", "warning"]  # fmt: skip
            return Server(name, cmd, port, "/healthz", self.tmp, env)
        if name == "bare":
            return Server(name, [sys.executable, str(BARE_APP), str(port)], port, "/ping", self.tmp, env)
        if name == "datasette":
            cmd = [
                str(BIN / "datasette"), "serve", db, "--host", "127.0.0.1", "--port", str(port),
                "--setting", "sql_time_limit_ms", "3600000", "--setting", "max_returned_rows", "100000000",
                "--setting", "max_csv_mb", "0",
            ]  # fmt: skip
            return Server(name, cmd, port, "/-/versions.json", self.tmp, env)
        raise ValueError(name)

    def cli(self, *options: str) -> list[str]:
        """The `sealexports` command on the data file (global options only)."""
        return [str(BIN / "sealexports"), *options, "--db", str(self.data.db)]

    @property
    def api_key(self) -> str:
        if self._key is None:
            cmd = [*self.cli(), "keys", "create", "--site", SITE, "--name", "bench"]
            self._key = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        return self._key

    def api(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """A request to our API with the key; its status and decoded JSON body."""
        url = self.get("ours").base + path
        status, data = http(method, url, body=body, headers={"X-API-Key": self.api_key})
        return status, json.loads(data) if data else None

    def clear_jobs(self) -> None:
        """Jobs and queued tasks left by an earlier run would run again when ours starts."""
        self.data.query("DELETE FROM export_jobs")
        self.remove_queue()

    def remove_queue(self) -> None:
        """huey's queue file, which our server keeps beside the database."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.data.db}.queue{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        for s in self.running.values():
            s.stop()
        if "ours" in self.running:
            self.remove_queue()
