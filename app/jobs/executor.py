"""Where profiling jobs run, chosen once when the application is created (``TUNEFIT_EXECUTOR``).

- ``local``: the in-process worker polls the database; a new job needs no message.
- ``celery``: Celery workers of the fleet consume per-device-kind queues; a new job's id is sent
  to its queue (see ``fleet``).

Everything that differs between the two is a method here, so nothing else branches on the choice.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Protocol

from tunefit import profiler
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, Job
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.jobs.worker import Worker, local_workers

log = logging.getLogger("tunefit")
WORKER_STOP_TIMEOUT_S = 60  # a graceful stop puts the running job back in the queue within this


class Executor(Protocol):
    """How jobs reach a worker, and which workers are alive."""

    name: str

    def start(self) -> None:
        """Begin running jobs (at application startup)."""

    def stop(self) -> None:
        """Stop running jobs (at shutdown); a job cut short goes back to the queue."""

    def dispatch(self, job: Job, body: ProfileIn) -> None:
        """Hand a stored, queued job to the workers."""

    def workers(self) -> list[dict[str, Any]]:
        """Live workers, in the shape of ``GET /api/v1/workers``."""


class LocalExecutor:
    """The in-process worker thread (when ``TUNEFIT_RUN_WORKER`` and torch is installed)."""

    name = "local"

    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.worker: Worker | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.settings.run_worker:
            return
        if not profiler.available():
            log.warning("torch is not installed: profiling jobs stay queued for a `tunefit worker` elsewhere")
            return
        self.worker = Worker(self.db, self.settings)
        self._thread = self.worker.start()

    def stop(self) -> None:
        if self.worker is not None and self._thread is not None:
            self.worker.stop.set()
            self._thread.join(timeout=WORKER_STOP_TIMEOUT_S)

    def dispatch(self, job: Job, body: ProfileIn) -> None:
        """Nothing to send: the worker finds the job in the database."""

    def workers(self) -> list[dict[str, Any]]:
        return local_workers(self.db, self.worker)


class CeleryExecutor:
    """The fleet: Celery workers behind ``TUNEFIT_BROKER_URL``."""

    name = "celery"

    def __init__(self, settings: Settings):
        from tunefit.app.jobs import fleet  # Celery is the [fleet] extra: imported only when chosen

        self.settings = settings
        self._fleet = fleet
        self.celery = fleet.make_celery(settings)

    def start(self) -> None:
        log.info("profiling jobs go to Celery workers through %s", redacted(self.settings.broker_url))

    def stop(self) -> None:
        """The workers are other processes: they stop on their own."""

    def dispatch(self, job: Job, body: ProfileIn) -> None:
        self._fleet.dispatch(self.celery, job, body.target, body.device)

    def workers(self) -> list[dict[str, Any]]:
        return self._fleet.list_workers(self.celery, self.settings.workers_inspect_timeout_s)


def no_worker_reason(executor: Executor) -> str | None:
    """Why no worker of this service can take a job (None: its in-process worker runs, or the jobs
    go to a fleet whose workers live elsewhere). A standalone `tunefit worker` polling the same
    database may still take it: the reason says how to start one."""
    if not isinstance(executor, LocalExecutor) or executor.worker is not None:
        return None
    if not profiler.available():
        return ("this install has no torch (the base install), so the service runs no worker: install the "
                "profiler (pip install -e '.[profiler]') and restart it, or run `tunefit worker` against the same "
                "database where torch is installed")
    return ("the service runs no worker of its own (TUNEFIT_RUN_WORKER=false): run `tunefit worker` against the "
            "same database")


def make_executor(db: Database, settings: Settings) -> Executor:
    """The executor ``settings.executor`` names."""
    if settings.executor == "celery":
        return CeleryExecutor(settings)
    return LocalExecutor(db, settings)


def redacted(url: str | None) -> str:
    """A broker URL without its password."""
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url or "")
