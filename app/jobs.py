"""Profiling jobs: create them from validated requests, show them, run them (the worker).

A job runs in a child process (``profiler.isolate``) with a time limit and a memory guard. The
worker keeps a heartbeat on the job while it runs; a job whose worker went silent (it died) is
marked failed with that reason and not retried (a job that killed its worker may do it again).
On a graceful stop the running job goes back to the queue. Queued jobs survive restarts: they
are rows in the database.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any

from .core.config import Settings
from .db import Database, Job
from .schemas import ProfileIn, VariantIn
from .services import run_estimate, to_request, variant_label

log = logging.getLogger("tunefit.worker")


def job_label(body: ProfileIn) -> str:
    model = body.model if isinstance(body.model, str) else "config.json"
    return f"{model} {variant_label(body, VariantIn())} batch {body.batch_size} seq {body.seq_len} {body.device}"


def create_job(db: Database, body: ProfileIn) -> Job:
    """Queue a measurement; ``body`` is validated as an estimate first, so bad input fails here."""
    run_estimate(to_request(body))
    return db.create_job(body.model_dump_json(), job_label(body), body.steps)


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def job_document(job: Job, with_result: bool = True) -> dict[str, Any]:
    """The API's view of a job."""
    return {
        "id": job.id, "status": job.status, "label": job.label, "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at), "attempts": job.attempts,
        "progress": job.progress, "request": json.loads(job.request_json),
        "result": job.result if with_result else None,
        "error": job.error, "url": f"/api/v1/profile/{job.id}",
    }


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
        from profiler.isolate import run_isolated

        body = ProfileIn.model_validate_json(job.request_json)
        log.info("job %s: %s", job.id, job.label)
        outcome = run_isolated(
            to_request(body), steps=job.steps, timeout_s=self.settings.job_timeout_s,
            memory_limit_bytes=self.settings.job_memory_limit_bytes,
            on_progress=lambda progress: self.db.set_progress(job.id, progress),
            heartbeat=lambda: self.db.heartbeat(job.id), cancel=self.stop.is_set,
            allow_hub=self.settings.allow_hub)
        if outcome.status == "cancelled":
            self.db.requeue(job.id)
            log.info("job %s: back in the queue (worker stopping)", job.id)
            return
        self.db.finish(job.id, outcome.status, outcome.result, outcome.error)
        if outcome.status == "done":
            self.db.add_measurements([(f"job:{job.id}", "job", "", {"case": job.label, **outcome.result})])
        log.info("job %s: %s%s", job.id, outcome.status, f" ({outcome.error})" if outcome.error else "")

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
