"""Profiling jobs: create them from validated requests (admission rules included) and show them.

Running them is ``runner.run_job``, called by a worker: the in-process one (``worker``) or a
Celery worker of the fleet (``fleet``); ``executor`` is the choice between the two.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tunefit.app.core.checkpoints import resolve_checkpoint
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, Job
from tunefit.app.hub import resolver as hub
from tunefit.app.hub.ids import parse_hub_ref
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.planning.schemas import CheckpointModel, VariantIn
from tunefit.app.planning.service import run_estimate, to_request, variant_label
from tunefit.estimator import EstimateError, EstimateRequest, gpus
from tunefit.estimator.units import GIB
from tunefit.profiler.limits import simulation_refusal


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


def worker_memory(body: ProfileIn, settings: Settings) -> tuple[int, str]:
    """The memory a job would run in, as far as the service knows it, and what that is.

    A CPU job runs under the worker's memory guard; a CUDA job on some worker's GPU, at most the
    largest GPU in the catalog; a simulation allocates nothing, and is bounded all the same: past
    ``max_simulated_bytes`` no fleet runs the plan, and simulating it only takes a worker's time.
    """
    if body.simulated_device is not None:
        return settings.max_simulated_bytes, "the simulation bound (TUNEFIT_MAX_SIMULATED_BYTES)"
    if body.device == "cpu":
        return settings.job_memory_limit_bytes, "the CPU worker's memory guard (TUNEFIT_JOB_MEMORY_LIMIT_BYTES)"
    largest = max(gpus().values(), key=lambda g: g.memory_bytes)
    return largest.memory_bytes, f"the largest GPU in the catalog ({largest.name})"


def check_fits(peak_bytes: int, body: ProfileIn, settings: Settings) -> None:
    """Refuse a job whose estimated peak exceeds the memory it would run in, with the estimate."""
    capacity, what = worker_memory(body, settings)
    if peak_bytes > capacity:
        raise JobTooLarge("device", f"the estimate is {peak_bytes / GIB:.2f} GiB at peak, more than the "
                                    f"{capacity / GIB:.2f} GiB of {what}: not queued")


def create_job(db: Database, body: ProfileIn, dispatch: Dispatch | None = None,
               settings: Settings | None = None, owner: str | None = None) -> Job:
    """Queue a measurement; ``body`` is validated as an estimate first, so bad input fails here, as
    does a simulation of what the meta device cannot run.

    A local checkpoint is read only under the configured directories (none without ``settings``).
    With ``settings`` the service's admission rules apply too: at most ``max_queued_jobs``
    waiting (:class:`QueueFull`), and an estimated peak that fits the memory the job would run in
    (:class:`JobTooLarge`).

    With a fleet (``dispatch``), the job is stored first and its id then sent to the broker; if
    the broker cannot take it, the job is marked failed with the reason and :class:`QueueUnavailable`
    raised.
    """
    body = pinned_to_commit(with_checked_checkpoint(body, settings.checkpoint_dirs if settings is not None else []))
    request, simulated = job_request(body)
    estimated = run_estimate(request)
    refusal = simulation_refusal(estimated.request) if simulated else None
    if refusal is not None:  # said now, not by a failed job later
        raise EstimateError("device", f"{refusal} (recipe 'none' takes the libraries' defaults): not queued")
    if settings is not None:
        check_fits(estimated.peak_bytes, body, settings)
    max_queued = settings.max_queued_jobs if settings is not None else None
    job = db.create_job(body.model_dump_json(), job_label(body), body.steps, max_queued, owner)
    if job is None:
        raise QueueFull(f"{max_queued} profiling jobs are waiting already (TUNEFIT_MAX_QUEUED_JOBS); try again later")
    if dispatch is not None:
        try:
            dispatch(job, body)
        except Exception as exc:
            reason = f"the job queue could not take the job: {type(exc).__name__}: {exc}"
            db.finish_first(job.id, "failed", error=reason)
            raise QueueUnavailable(reason) from exc
    return job


def pinned_to_commit(body: ProfileIn) -> ProfileIn:
    """A Hub model named at the commit it resolves to now (``org/name@sha``): the worker measures
    what the page showed, even if the branch moves before the job runs."""
    if not hub.names_hub_model(body.model, body.revision):
        return body
    assert isinstance(body.model, str)
    resolved = hub.active().resolve(parse_hub_ref(body.model, body.revision)).snapshot
    return body.model_copy(update={"model": resolved.reference, "revision": None})


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


LISTED_JOBS = 50  # the latest jobs a job list shows

# What a public job document leaves out: the measuring machine's platform (its kernel) from a result.
PRIVATE_ENVIRONMENT = ("platform",)


def job_document(job: Job, with_result: bool = True, private: bool = True) -> dict[str, Any]:
    """The API's view of a job. ``private`` (everyone but the admin): no server paths, hostnames or
    process ids: a local checkpoint by its directory's name, no worker (``host:pid:thread``), no
    platform in the result's environment."""
    request = json.loads(job.request_json)
    result = job.result if with_result else None
    if private:
        request, result = _public_request(request), _public_result(result)
    return {
        "id": job.id, "status": job.status, "label": job.label, "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at), "attempts": job.attempts,
        "worker": None if private else job.worker,
        "progress": job.progress, "request": request, "result": result,
        "error": job.error, "url": f"/api/v1/profile/{job.id}",
    }


def public_worker(worker: dict[str, Any], index: int) -> dict[str, Any]:
    """A worker as everyone but the admin sees it: its kind, device and job, no name (it holds the
    host and process id), host or library versions."""
    return {**worker, "name": f"{worker['executor']} worker {index + 1}", "host": None, "versions": {}}


def _public_request(request: dict[str, Any]) -> dict[str, Any]:
    model = request.get("model")
    if isinstance(model, dict) and isinstance(model.get("checkpoint"), str):
        return {**request, "model": {"checkpoint": Path(model["checkpoint"]).name}}
    return request


def _public_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    environment = result.get("environment") if result else None
    if result is None or not isinstance(environment, dict):
        return result
    return {**result, "environment": {k: v for k, v in environment.items() if k not in PRIVATE_ENVIRONMENT}}
