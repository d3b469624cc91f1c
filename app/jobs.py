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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tunefit.estimator import EstimateError, EstimateRequest, gpus
from tunefit.estimator.units import GIB

from .checkpoints import resolve_checkpoint
from .core.config import Settings
from .db import Database, Job
from .schemas import CheckpointModel, ProfileIn, VariantIn
from .services import run_estimate, to_request, variant_label

log = logging.getLogger("tunefit.worker")


def job_label(body: ProfileIn) -> str:
    if isinstance(body.model, CheckpointModel):
        model = Path(body.model.checkpoint).name
    else:
        model = body.model if isinstance(body.model, str) else "config.json"
    where = f"simulated for {body.simulated_device}" if body.simulated_device else body.device
    return f"{model} {variant_label(body, VariantIn())} batch {body.batch_size} seq {body.seq_len} {where}"


def job_request(body: ProfileIn) -> tuple[EstimateRequest, bool]:
    """The estimator request a job runs, and whether it is simulated on the meta device (then the
    request's device is the simulated one)."""
    if body.simulated_device is None:
        return to_request(body), False
    return to_request(body.model_copy(update={"device": body.simulated_device})), True


class QueueUnavailable(Exception):
    """The job queue (the Celery broker) could not take a job."""


class QueueFull(Exception):
    """``TUNEFIT_MAX_QUEUED_JOBS`` jobs wait already."""


class JobTooLarge(EstimateError):
    """The estimate says the job would not fit the memory it would run in."""


Dispatch = Callable[[Job, ProfileIn], None]


def with_checked_checkpoint(body: ProfileIn, roots: Sequence[Path]) -> ProfileIn:
    """``body`` with its local checkpoint's path checked and made real (see ``app.checkpoints``)."""
    if not isinstance(body.model, CheckpointModel):
        return body
    real = resolve_checkpoint(body.model.checkpoint, roots)
    return body.model_copy(update={"model": CheckpointModel(checkpoint=str(real))})


def worker_memory(body: ProfileIn, settings: Settings) -> tuple[int | None, str]:
    """The memory a job would run in, as far as the service knows it, and what that is.

    A CPU job runs under the worker's memory guard; a CUDA job on some worker's GPU, at most the
    largest GPU in the catalog; a simulation allocates nothing.
    """
    if body.simulated_device is not None:
        return None, ""
    if body.device == "cpu":
        return settings.job_memory_limit_bytes, "the CPU worker's memory guard (TUNEFIT_JOB_MEMORY_LIMIT_BYTES)"
    largest = max(gpus().values(), key=lambda g: g.memory_bytes)
    return largest.memory_bytes, f"the largest GPU in the catalog ({largest.name})"


def check_fits(peak_bytes: int, body: ProfileIn, settings: Settings) -> None:
    """Refuse a job whose estimated peak exceeds the memory it would run in, with the estimate."""
    capacity, what = worker_memory(body, settings)
    if capacity is not None and peak_bytes > capacity:
        raise JobTooLarge("device", f"the estimate is {peak_bytes / GIB:.2f} GiB at peak, more than the "
                                    f"{capacity / GIB:.2f} GiB of {what}: not queued")


def create_job(db: Database, body: ProfileIn, dispatch: Dispatch | None = None,
               settings: Settings | None = None) -> Job:
    """Queue a measurement; ``body`` is validated as an estimate first, so bad input fails here.

    A local checkpoint is read only under the configured directories (none without ``settings``).
    With ``settings`` the service's admission rules apply too: at most ``max_queued_jobs``
    waiting (:class:`QueueFull`), and an estimated peak that fits the memory the job would run in
    (:class:`JobTooLarge`).

    With a fleet (``dispatch``), the job is stored first and its id then sent to the broker; if
    the broker cannot take it, the job is marked failed with the reason and :class:`QueueUnavailable`
    raised.
    """
    body = with_checked_checkpoint(body, settings.checkpoint_dirs if settings is not None else [])
    estimated = run_estimate(job_request(body)[0])
    if settings is not None:
        check_fits(estimated.peak_bytes, body, settings)
        if db.count_jobs("queued") >= settings.max_queued_jobs:
            raise QueueFull(f"{settings.max_queued_jobs} profiling jobs are waiting already "
                            "(TUNEFIT_MAX_QUEUED_JOBS); try again later")
    job = db.create_job(body.model_dump_json(), job_label(body), body.steps)
    if dispatch is not None:
        try:
            dispatch(job, body)
        except Exception as exc:
            reason = f"the job queue could not take the job: {type(exc).__name__}: {exc}"
            db.finish_first(job.id, "failed", error=reason)
            raise QueueUnavailable(reason) from exc
    return job


def local_workers(db: Database, worker: Worker | None) -> list[dict[str, Any]]:
    """The in-process worker, if it runs, in the shape of ``GET /api/v1/workers``."""
    if worker is None:
        return []
    running = next((j for j in db.list_jobs(50) if j.status == "running" and j.worker == worker.name), None)
    from tunefit.profiler.device import versions

    return [{"name": worker.name, "executor": "local", "kind": None, "device_name": None, "memory_bytes": None,
             "host": socket.gethostname(), "versions": versions(),
             "current_job": {"id": running.id, "label": running.label, "attempt": running.attempts} if running else None}]


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def job_document(job: Job, with_result: bool = True) -> dict[str, Any]:
    """The API's view of a job."""
    return {
        "id": job.id, "status": job.status, "label": job.label, "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at), "attempts": job.attempts,
        "worker": job.worker,
        "progress": job.progress, "request": json.loads(job.request_json),
        "result": job.result if with_result else None,
        "error": job.error, "url": f"/api/v1/profile/{job.id}",
    }


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
    if not db.finish_first(job.id, outcome.status, outcome.result, outcome.error):
        log.info("job %s: another delivery recorded its outcome first; this one is dropped", job.id)
        return outcome.status
    if outcome.status == "done":
        measured = {"case": job.label, **outcome.result, "worker": job.worker}
        if device_kind:
            measured["device_kind"] = device_kind
        db.add_measurements([(f"job:{job.id}", "job", "", measured)])
    log.info("job %s: %s%s", job.id, outcome.status, f" ({outcome.error})" if outcome.error else "")
    return outcome.status


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
