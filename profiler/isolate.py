"""Run a measurement in a child process, with a time limit and a memory guard.

An out-of-memory, a crash or a hang of the child becomes a failed outcome with a readable reason;
the caller (the worker, the service) keeps running. The child is started with ``spawn`` (a fresh
interpreter: no forked torch threads or CUDA state) and reports progress over a pipe. The memory
guard reads the child's resident set size from ``/proc`` and stops it above the limit, before the
kernel's OOM killer would pick a victim.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from tunefit.estimator import EstimateRequest
from tunefit.estimator.units import MIB

POLL_S = 0.1
HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class Outcome:
    """``done`` with the measurement, ``failed`` with why, or ``cancelled`` by the caller."""

    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """Stop this child when the process that started it dies (a worker killed with SIGKILL cannot
    stop its child itself): a measurement nobody waits for only holds memory."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child(conn: Connection, request: EstimateRequest, steps: int, allow_hub: bool, simulated: bool = False,
           niceness: int = 0) -> None:
    _exit_with_parent()
    if niceness > 0:  # the service's own work first; what a step allocates does not depend on it
        os.nice(niceness)
    if simulated:
        from .simulation import simulate as measure
    else:
        from .run import measure

    try:
        result = measure(request, steps, progress=lambda phase, step, total: conn.send(
            ("progress", {"phase": phase, "step": step, "steps": total})), allow_hub=allow_hub)
        conn.send(("done", result))
    except BaseException as exc:  # everything, MemoryError and torch's OutOfMemoryError included
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        conn.send(("failed", detail))
    finally:
        conn.close()


def resident_bytes(pid: int) -> int | None:
    """The resident set size of ``pid`` (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # "VmRSS: <n> kB", where the kernel's kB is 1024 bytes
    except (OSError, ValueError):
        return None
    return None


def run_isolated(request: EstimateRequest, steps: int, timeout_s: float, memory_limit_bytes: int | None = None,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 heartbeat: Callable[[], None] | None = None, cancel: Callable[[], bool] | None = None,
                 allow_hub: bool = False, simulated: bool = False, niceness: int = 0) -> Outcome:
    """Measure ``request`` in a child process; never raises for what happens in the child.

    ``heartbeat`` is called about once a second while the child works; when ``cancel`` returns
    True the child is stopped and the outcome is ``cancelled``. ``simulated``: simulate the step on
    the meta device (``profiler.simulation``) instead of measuring it. ``niceness``: the child's CPU
    priority is lowered by this much (``os.nice``), so a server in the same host stays responsive.
    """
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(child_conn, request, steps, allow_hub, simulated, niceness),
                        daemon=True)
    child.start()
    pid = child.pid
    assert pid is not None  # a started process has one
    child_conn.close()
    deadline = time.monotonic() + timeout_s
    next_beat = 0.0
    try:
        while True:
            if parent_conn.poll(POLL_S):
                try:
                    kind, payload = parent_conn.recv()
                except EOFError:
                    return _exit_reason(child)
                if kind == "progress":
                    if on_progress:
                        on_progress(payload)
                    continue
                child.join(timeout=30)
                return Outcome("done", result=payload) if kind == "done" else Outcome("failed", error=payload)
            if not child.is_alive():
                return _exit_reason(child)
            if cancel and cancel():
                return Outcome("cancelled", error="stopped before it finished")
            if time.monotonic() > deadline:
                return Outcome("failed", error=f"timed out after {timeout_s:g} s (time limit)")
            rss = resident_bytes(pid)
            if memory_limit_bytes is not None and rss is not None and rss > memory_limit_bytes:
                return Outcome("failed", error=(f"memory guard: the measurement used {rss / MIB:,.0f} MiB of host "
                                                f"memory, over the {memory_limit_bytes / MIB:,.0f} MiB limit"))
            if heartbeat and time.monotonic() >= next_beat:
                heartbeat()
                next_beat = time.monotonic() + HEARTBEAT_S
    finally:
        if child.is_alive():
            child.kill()
            child.join(timeout=10)
        parent_conn.close()


def _exit_reason(child: BaseProcess) -> Outcome:
    child.join(timeout=10)
    code = child.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return Outcome("failed", error=f"the measurement process was killed by {name}{hint}")
    return Outcome("failed", error=f"the measurement process exited with status {code} without a result")
