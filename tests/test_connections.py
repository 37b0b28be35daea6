"""A live server bounds its connections: `limit_concurrency` and `timeout_keep_alive` reach uvicorn."""

from __future__ import annotations

import socket
from pathlib import Path

import requests

from sealexports.storage.database import connect
from tests import live


def _open(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_over_limit_concurrency_new_requests_get_503(tmp_path: Path) -> None:
    db = tmp_path / "sealexports.db"
    connect(db).close()
    env = {"SEALEXPORTS_LIMIT_CONCURRENCY": "3", "SEALEXPORTS_WORKERS": "0"}
    with live.running(db, tmp_path, env=env) as server:
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        idle = [_open(server.url) for _ in range(3)]  # three clients that connect and say nothing
        try:
            r = requests.get(f"{server.url}/healthz", timeout=10)
            assert r.status_code == 503, r.text
        finally:
            for s in idle:
                s.close()
        for _ in range(50):  # the server notices the closed sockets at once, but asynchronously
            if requests.get(f"{server.url}/healthz", timeout=10).status_code == 200:
                break
        else:
            raise AssertionError("the server never took requests again")


def test_an_idle_keep_alive_connection_is_closed_after_timeout_keep_alive(tmp_path: Path) -> None:
    db = tmp_path / "sealexports.db"
    connect(db).close()
    env = {"SEALEXPORTS_TIMEOUT_KEEP_ALIVE": "1", "SEALEXPORTS_WORKERS": "0"}
    with live.running(db, tmp_path, env=env) as server:
        s = _open(server.url)
        s.settimeout(4)  # uvicorn's own default (5 s) would not close it by then
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := s.recv(65536):  # until the server closes the idle connection
                received += chunk
        finally:
            s.close()
        assert received.startswith(b"HTTP/1.1 200"), received
