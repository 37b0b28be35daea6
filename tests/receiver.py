"""A webhook receiver on loopback for the tests: records every request (headers and raw body) and
answers with the statuses it is told, in order (then 200)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200
    received: list[Received] = field(default_factory=list)
    hold: threading.Event | None = None  # set: the first request waits for it before answering
    got: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.received) >= count, timeout), self.received
            return list(self.received)


@contextmanager
def receiving(answers: list[int] | None = None, hold: threading.Event | None = None) -> Iterator[Receiver]:
    receiver = Receiver("", list(answers or []), hold=hold)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.got:
                first = not receiver.received
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.got.notify_all()
            if first and receiver.hold is not None:
                receiver.hold.wait(30)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()
