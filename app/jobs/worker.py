"""The in-process worker (executor ``local``): polls the database and runs queued jobs one at a
time, each in its own child process."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, Job
from tunefit.app.jobs.runner import run_job
from tunefit.app.jobs.service import LISTED_JOBS

log = logging.getLogger("tunefit.worker")


class Worker:
    """Runs queued jobs one at a time, each in its own child process."""

    def __init__(self, db: Database, settings: Settings, name: str | None = None):
        self.db = db
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.stop = threading.Event()

    def recover(self) -> int:
        """Fail the jobs whose worker died while running them."""
        failed = self.db.fail_stale(self.settings.job_heartbeat_timeout_s)
        if failed:
            log.warning("marked %d job(s) failed: their worker stopped while running them", failed)
        return failed

    def run_once(self) -> str | None:
        """Run the oldest queued job, if any; return its id."""
        job = self.db.claim_next(self.name)
        if job is None:
            return None
        self._run(job)
        return job.id

    def _run(self, job: Job) -> None:
        try:
            self._measure(job)
        except Exception as exc:  # the worker outlives anything one job does
            log.exception("job %s: the worker could not run it", job.id)
            self.db.finish(job.id, "failed", error=f"the worker could not run it: {type(exc).__name__}: {exc}")

    def _measure(self, job: Job) -> None:
        run_job(self.db, self.settings, job, device_kind=None, cancel=self.stop.is_set)

    def serve(self) -> None:
        """Run jobs until :attr:`stop` is set, checking for dead workers' jobs now and then."""
        self.recover()
        idle = 0.0
        while not self.stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # the database was unreachable: log, wait, try again
                log.exception("worker: could not claim a job")
                ran = None
            if ran is None:
                self.stop.wait(self.settings.worker_poll_s)
                idle += self.settings.worker_poll_s
                if idle >= self.settings.job_heartbeat_timeout_s:
                    self.recover()
                    idle = 0.0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, name="tunefit-worker", daemon=True)
        thread.start()
        return thread


def local_workers(db: Database, worker: Worker | None) -> list[dict[str, Any]]:
    """The in-process worker, if it runs, in the shape of ``GET /api/v1/workers``."""
    if worker is None:
        return []
    running = next((j for j in db.list_jobs(LISTED_JOBS) if j.status == "running" and j.worker == worker.name), None)
    from tunefit.profiler.device import versions

    current = {"id": running.id, "label": running.label, "attempt": running.attempts} if running else None
    return [{"name": worker.name, "executor": "local", "kind": None, "device_name": None, "memory_bytes": None,
             "host": socket.gethostname(), "versions": versions(), "current_job": current}]
