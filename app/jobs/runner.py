"""Running one claimed job: measure it in a child process, record the outcome.

A job runs in a child process (``profiler.isolate``) with a time limit and a memory guard. The
worker keeps a heartbeat on the job while it runs; a job whose worker went silent (it died) is
marked failed with that reason and not retried (a job that killed its worker may do it again).
On a graceful stop the running job goes back to the queue. Queued jobs survive restarts: they
are rows in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, Job
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.jobs.service import job_request, with_checked_checkpoint
from tunefit.estimator import EstimateError

log = logging.getLogger("tunefit.worker")


def run_job(db: Database, settings: Settings, job: Job, device_kind: str | None,
            cancel: Callable[[], bool] | None = None) -> str:
    """Measure a claimed job in a child process and record its outcome (unless another delivery
    of the same job recorded one first); returns the outcome's status."""
    from tunefit.profiler.isolate import run_isolated

    log.info("job %s: %s", job.id, job.label)
    try:  # the checkpoint's links may have changed since the job was queued
        body = with_checked_checkpoint(ProfileIn.model_validate_json(job.request_json), settings.checkpoint_dirs)
        request, simulated = job_request(body)
    except EstimateError as exc:
        db.finish_first(job.id, "failed", error=f"refused: {exc}")
        return "failed"
    outcome = run_isolated(
        request, steps=job.steps, simulated=simulated, timeout_s=settings.job_timeout_s,
        memory_limit_bytes=settings.job_memory_limit_bytes,
        on_progress=lambda progress: db.set_progress(job.id, progress),
        heartbeat=lambda: db.heartbeat(job.id), cancel=cancel, allow_hub=settings.allow_hub,
        niceness=settings.job_niceness)
    if outcome.status == "cancelled":
        db.requeue(job.id)
        log.info("job %s: back in the queue (worker stopping)", job.id)
        return outcome.status
    measurement = None
    if outcome.status == "done" and outcome.result is not None:
        measured = {"case": job.label, **outcome.result, "worker": job.worker}
        if device_kind:
            measured["device_kind"] = device_kind
        measurement = (f"job:{job.id}", "job", "", measured)
    # the outcome and its measurement in one transaction: a crash between the two lost the measurement
    if not db.finish_first(job.id, outcome.status, outcome.result, outcome.error, measurement):
        log.info("job %s: another delivery recorded its outcome first; this one is dropped", job.id)
        return outcome.status
    log.info("job %s: %s%s", job.id, outcome.status, f" ({outcome.error})" if outcome.error else "")
    return outcome.status
