"""Leases: which process runs a job, and until when, so that several processes can share one
database. A process renews the leases of its running jobs (a heartbeat); another process takes
a job over only once its lease has run out (its owner died, or hung past the lease)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field


def new_owner() -> str:
    """host:pid:random, so that a restarted process with a reused pid is someone else."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Lease:
    seconds: float
    owner: str = field(default_factory=new_owner)

    def until(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) + self.seconds

    @property
    def heartbeat_seconds(self) -> float:
        """How often leases are renewed and lapsed ones looked for: a third of the lease, so
        that two late heartbeats in a row still keep a job."""
        return self.seconds / 3
