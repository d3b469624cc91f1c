"""Profiling on a fleet of hosts: Celery with a Redis broker (``TUNEFIT_EXECUTOR=celery``).

The service writes the job to the database and sends its id to the queue of the device kind it
targets (``cuda.h100-80gb-hbm3``, ``cpu``), or to ``any.cuda`` / ``any.cpu``. A worker
(``tunefit worker --executor celery``) consumes its own kind's queue and the ``any`` queue of its
device type, one job at a time, and writes progress and results to the same database: nothing
flows back through the service, so results survive its restarts.

Delivery, as documented in docs/operations.md:
- Messages are acknowledged late (after the job), with a prefetch of one: a job is never
  acknowledged before its result is stored.
- A worker killed mid-job leaves its message unacknowledged. Redis hands it out again once the
  visibility timeout has passed (the job time limit plus five minutes by default). That delivery
  finds the job running with a silent heartbeat and runs it again; if the job's attempts are used
  up (``TUNEFIT_JOB_MAX_ATTEMPTS``, default 2) it marks the job failed with the reason instead.
- A delivery that finds the job done or failed does nothing; one that finds it running with a
  live heartbeat elsewhere looks again later. The outcome is stored by whoever finishes first
  (a conditional update), so a job's result is stored once.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, Job
from tunefit.app.hub import resolver as hub
from tunefit.app.hub.store import DatabaseStore
from tunefit.app.jobs.runner import run_job

log = logging.getLogger("tunefit.fleet")

TASK = "tunefit.profile"
INFO_COMMAND = "tunefit_worker"

# This worker process: its device, and the job it runs now (read by the inspect command).
_state: dict[str, Any] = {"device": None, "current_job": None, "settings": None, "db": None}
_state_lock = threading.Lock()


def queue_for(target: str, device: str) -> str:
    """The queue a job goes to: its target kind, or ``any.<device type>``; every worker takes
    simulations (``any.meta``: they need torch, not the device they simulate)."""
    if device == "meta":
        return "any.meta"
    return f"any.{device}" if target in ("any", device) else target


def worker_queues(kind: str, device: str) -> list[str]:
    return [kind, f"any.{device}", "any.meta"]


def make_celery(settings: Settings) -> Celery:
    app = Celery("tunefit", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # an unreachable broker fails the request within about a second (503), not after minutes
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.celery_restore_interval_s,
            "unacked_restore_throttle": 1,
        },
    )
    app.task(name=TASK, bind=True, max_retries=None)(_profile_task)
    return app


def dispatch(app: Celery, job: Job, target: str, device: str) -> None:
    """Send a queued job's id to its queue."""
    app.send_task(TASK, args=[job.id], queue=queue_for(target, device))


def _profile_task(task, job_id: str) -> str:
    """One delivery of a job (see the module docstring for what each case does)."""
    settings: Settings = _state["settings"]
    db: Database = _state["db"]
    name = task.request.hostname or f"celery:{os.getpid()}"
    verdict, job = db.claim_delivered(job_id, name, settings.job_heartbeat_timeout_s, settings.job_max_attempts)
    log.info("job %s delivered to %s: %s", job_id, name, verdict)
    if verdict == "busy":
        raise task.retry(countdown=settings.job_busy_retry_s)
    if verdict != "run" or job is None:
        return verdict
    with _state_lock:
        _state["current_job"] = {"id": job.id, "label": job.label, "attempt": job.attempts}
    try:
        return run_job(db, settings, job, device_kind=_state["device"]["kind"])
    except Exception as exc:  # the worker outlives anything one job does
        log.exception("job %s: the worker could not run it", job_id)
        db.finish_first(job_id, "failed", error=f"the worker could not run it: {type(exc).__name__}: {exc}")
        return "failed"
    finally:
        with _state_lock:
            _state["current_job"] = None


@inspect_command(name=INFO_COMMAND)
def _worker_info(state) -> dict[str, Any]:
    """Answers ``GET /api/v1/workers``: the device, versions and the job running now."""
    with _state_lock:
        return {"device": _state["device"], "current_job": _state["current_job"]}


def run_worker(settings: Settings, force_cpu: bool = False, loglevel: str = "INFO") -> None:
    """Start a Celery worker for this host's device (blocks until it stops)."""
    from tunefit.profiler.device import describe

    device = describe(force_cpu=force_cpu)
    db = Database(settings.sqlalchemy_url)
    hub.use(hub.HubResolver(settings, DatabaseStore(db)))  # the service's store: the commits it resolved
    _state.update(device=device, settings=settings, db=db)
    app = make_celery(settings)
    name = f"tunefit-{device['kind']}-{os.getpid()}@{device['host']}"
    log.info("worker %s consumes %s", name, worker_queues(device["kind"], device["device"]))
    app.worker_main(["worker", "--pool=threads", "--concurrency=1", "--without-gossip", "--without-mingle",
                     "-Q", ",".join(worker_queues(device["kind"], device["device"])), "-n", name,
                     f"--loglevel={loglevel}"])


def list_workers(app: Celery, timeout_s: float) -> list[dict[str, Any]]:
    """Live workers, from a broadcast of the info command (those that answer within ``timeout_s``)."""
    replies = app.control.broadcast(INFO_COMMAND, reply=True, timeout=timeout_s) or []
    workers = []
    for reply in replies:
        for name, info in reply.items():
            device = info.get("device") or {}
            workers.append({"name": name, "executor": "celery", "kind": device.get("kind"),
                            "device_name": device.get("device_name"), "memory_bytes": device.get("memory_bytes"),
                            "host": device.get("host"), "versions": device.get("versions") or {},
                            "current_job": info.get("current_job")})
    return sorted(workers, key=lambda w: w["name"])
