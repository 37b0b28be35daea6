"""The reference web app: one Litestar route on uvicorn, served as `sealexports serve` serves
ours (one worker, log level warning, no access log, the same connection limits). argv = port."""

from __future__ import annotations

import sys

import uvicorn
from litestar import Litestar, get

from sealexports.config import Settings


@get("/ping", sync_to_thread=False)
def ping() -> dict[str, bool]:
    return {"ok": True}


app = Litestar(route_handlers=[ping])

if __name__ == "__main__":
    defaults = Settings()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        limit_concurrency=defaults.limit_concurrency,
        timeout_keep_alive=defaults.timeout_keep_alive,
    )
