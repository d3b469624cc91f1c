"""``/api/v1`` profiling jobs and the workers that run them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request

from tunefit.app.api.deps import database, executor, is_admin_caller, may_create_jobs
from tunefit.app.api.responses import ADMIN_ERRORS, JOB_ERRORS, DocumentResponse
from tunefit.app.core.clients import client_id, remember
from tunefit.app.core.ids import JobId
from tunefit.app.core.routing import JSONBodyRoute
from tunefit.app.jobs import service
from tunefit.app.jobs.schemas import JobOut, ProfileIn, WorkerOut
from tunefit.app.planning.schemas import ErrorOut

router = APIRouter(route_class=JSONBodyRoute)


@router.post("/profile", status_code=202, response_model=JobOut, responses=JOB_ERRORS,
             dependencies=[Depends(may_create_jobs)])
def create_profile(body: ProfileIn, request: Request) -> DocumentResponse:
    """Queue a real measurement of the setting (or a meta-device simulation); poll its ``url`` for
    progress and the result. Refused (422) when the estimate exceeds the memory it would run in."""
    client, new_client = client_id(request)
    job = service.create_job(database(request), body, executor(request).dispatch, request.app.state.settings,
                             owner=client)
    response = DocumentResponse(service.job_document(job), status_code=202)
    if new_client:
        remember(response, client)  # the job lists of this client (its cookie) show the job
    return response


@router.get("/workers", response_model=list[WorkerOut], responses=ADMIN_ERRORS)
def list_workers(request: Request, admin: bool = Depends(is_admin_caller)) -> DocumentResponse:
    """Live workers: the in-process one (executor local), or the Celery workers that answer within
    ``TUNEFIT_WORKERS_INSPECT_TIMEOUT_S`` (executor celery), with device kind, memory and the job
    each runs now; names, hosts and versions with the admin token only."""
    workers = executor(request).workers()
    return DocumentResponse(workers if admin else [service.public_worker(w, i) for i, w in enumerate(workers)])


@router.get("/profile", response_model=list[JobOut], responses=ADMIN_ERRORS)
def list_profiles(request: Request, admin: bool = Depends(is_admin_caller)) -> DocumentResponse:
    """This client's latest profiling jobs (the ones its cookie created; every job with the admin
    token), newest first, results left out: fetch a job for its result."""
    client, new_client = client_id(request)
    jobs = database(request).list_jobs(service.LISTED_JOBS, owner=None if new_client else client, everyone=admin)
    return DocumentResponse([service.job_document(j, with_result=False, private=not admin) for j in jobs])


@router.get("/profile/{job_id}", response_model=JobOut, responses={**ADMIN_ERRORS, 404: {"model": ErrorOut}})
def get_profile(job_id: JobId, request: Request, admin: bool = Depends(is_admin_caller)) -> DocumentResponse:
    """One job, for whoever has its id (a link can be shared); private details with the admin token."""
    job = database(request).get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no profiling job {job_id!r}")
    return DocumentResponse(service.job_document(job, private=not admin))
