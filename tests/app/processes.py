"""Process helpers for the tests that start and kill workers and servers: waiting on a condition, a free
port, the children of a process (Linux /proc)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, *, timeout_s: float, poll_s: float = 0.1,
             logs: Path | None = None) -> T:
    """Call ``condition`` every ``poll_s`` seconds until it returns something true, and return that;
    after ``timeout_s`` fail naming ``what``, with the end of the log file ``logs`` where given."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    tail = logs.read_text()[-3000:] if logs and logs.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{tail}")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out
