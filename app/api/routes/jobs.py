"""``/api/v1`` profiling jobs and the workers that run them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from tunefit.app.api.deps import database, executor, may_create_jobs
from tunefit.app.api.responses import JOB_ERRORS, DocumentResponse
from tunefit.app.core.ids import JobId
from tunefit.app.core.routing import JSONBodyRoute
from tunefit.app.jobs import service
from tunefit.app.jobs.schemas import JobOut, ProfileIn, WorkerOut
from tunefit.app.planning.schemas import ErrorOut

router = APIRouter(route_class=JSONBodyRoute)
LISTED_JOBS = 50


@router.post("/profile", status_code=202, response_model=JobOut, responses=JOB_ERRORS,
             dependencies=[Depends(may_create_jobs)])
def create_profile(body: ProfileIn, request: Request) -> DocumentResponse:
    """Queue a real measurement of the setting (or a meta-device simulation); poll its ``url`` for
    progress and the result. Refused (422) when the estimate exceeds the memory it would run in."""
    job = service.create_job(database(request), body, executor(request).dispatch, request.app.state.settings)
    return DocumentResponse(service.job_document(job), status_code=202)


@router.get("/workers", response_model=list[WorkerOut])
def list_workers(request: Request) -> DocumentResponse:
    """Live workers: the in-process one (executor local), or the Celery workers that answer within
    ``TUNEFIT_WORKERS_INSPECT_TIMEOUT_S`` (executor celery), with device kind, memory, versions
    and the job each runs now."""
    return DocumentResponse(executor(request).workers())


@router.get("/profile", response_model=list[JobOut])
def list_profiles(request: Request) -> DocumentResponse:
    """The latest profiling jobs, newest first (results left out: fetch a job for its result)."""
    jobs = database(request).list_jobs(LISTED_JOBS)
    return DocumentResponse([service.job_document(j, with_result=False) for j in jobs])


@router.get("/profile/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})
def get_profile(job_id: JobId, request: Request) -> DocumentResponse:
    job = database(request).get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no profiling job {job_id!r}")
    return DocumentResponse(service.job_document(job))
