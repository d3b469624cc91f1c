"""``/api/v1``: catalogs, estimate, capacity, compare. Routes parse, call a service, return."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from .. import jobs, services
from ..core.routing import JSONBodyRoute
from ..report_views import report_json
from ..schemas import (
    CapacityIn,
    CapacityOut,
    CompareIn,
    CompareOut,
    ErrorOut,
    EstimateIn,
    EstimateOut,
    GpuOut,
    JobOut,
    ModelOut,
    ProfileIn,
    WorkerOut,
)
from .deps import answers, dispatcher, may_create_jobs

router = APIRouter(prefix="/api/v1", tags=["v1"], route_class=JSONBodyRoute)
ERRORS = {404: {"model": ErrorOut, "description": "unknown model or GPU id (close matches suggested)"},
          413: {"model": ErrorOut, "description": "request body too large"},
          422: {"description": "invalid input, located by field"}}


class JSONResponse(Response):
    """The estimator's documents are plain JSON types already: written by orjson as they are (no
    second validation); the response models document them in OpenAPI."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


@router.get("/models", response_model=list[ModelOut])
async def list_models() -> JSONResponse:
    return JSONResponse(services.model_list())


@router.get("/models/{model_id}", response_model=ModelOut, responses=ERRORS)
async def get_model(model_id: str) -> JSONResponse:
    return JSONResponse(services.model_summary(model_id, with_config=True))


@router.get("/gpus", response_model=list[GpuOut])
async def list_gpus() -> JSONResponse:
    return JSONResponse(services.gpu_list())


@router.post("/estimate", response_model=EstimateOut, responses=ERRORS)
async def estimate(body: EstimateIn, request: Request) -> JSONResponse:
    """Peak memory of one setting, term by term, with the paper's figure beside it."""
    return JSONResponse(answers(request).answer("estimate", body, services.estimate_document))


@router.post("/capacity", response_model=CapacityOut, responses=ERRORS)
async def capacity(body: CapacityIn, request: Request) -> JSONResponse:
    """For every catalog GPU (or those named): fits, max batch, max sequence, GPUs needed."""
    return JSONResponse(await answers(request).answer_in_thread("capacity", body, services.capacity_document))


@router.post("/compare", response_model=CompareOut, responses=ERRORS)
async def compare(body: CompareIn, request: Request) -> JSONResponse:
    """The same model under several methods or ranks (default: full vs LoRA vs QLoRA)."""
    return JSONResponse(await answers(request).answer_in_thread("compare", body, services.compare_document))


JOB_ERRORS = {
    **ERRORS,
    401: {"model": ErrorOut, "description": "the service sets an API token and the request lacks it"},
    429: {"model": ErrorOut, "description": "this client created too many jobs lately (see Retry-After)"},
    503: {"model": ErrorOut, "description": "the queue is full, or its broker unreachable"},
}


@router.post("/profile", status_code=202, response_model=JobOut, responses=JOB_ERRORS,
             dependencies=[Depends(may_create_jobs)])
def create_profile(body: ProfileIn, request: Request) -> JSONResponse:
    """Queue a real measurement of the setting (or a meta-device simulation); poll its ``url`` for
    progress and the result. Refused (422) when the estimate exceeds the memory it would run in."""
    job = jobs.create_job(request.app.state.db, body, dispatcher(request), request.app.state.settings)
    return JSONResponse(jobs.job_document(job), status_code=202)


@router.get("/workers", response_model=list[WorkerOut])
def list_workers(request: Request) -> JSONResponse:
    """Live workers: the in-process one (executor local), or the Celery workers that answer within
    ``TUNEFIT_WORKERS_INSPECT_TIMEOUT_S`` (executor celery), with device kind, memory, versions
    and the job each runs now."""
    return JSONResponse(services.worker_list(request.app.state))


@router.get("/profile", response_model=list[JobOut])
def list_profiles(request: Request) -> JSONResponse:
    """The latest profiling jobs, newest first (results left out: fetch a job for its result)."""
    return JSONResponse([jobs.job_document(j, with_result=False) for j in request.app.state.db.list_jobs(50)])


@router.get("/profile/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}})
def get_profile(job_id: str, request: Request) -> JSONResponse:
    job = request.app.state.db.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no profiling job {job_id!r}")
    return JSONResponse(jobs.job_document(job))


@router.get("/reports")
async def reports(request: Request, method: str | None = None, family: str | None = None, split: str | None = None,
            device: str | None = None, device_kind: str | None = None, source: str | None = None,
            dtype: str | None = None,
            attn: str | None = None) -> JSONResponse:
    """Every stored measurement matching the filters, estimated again by this estimator, with the
    accuracy table (median / max |predicted - measured| / measured, in %)."""
    filters = {k: v for k, v in dict(method=method, family=family, split=split, device=device, device_kind=device_kind, source=source,
                                     dtype=dtype, attn=attn).items() if v}
    return JSONResponse(report_json(request.app.state.db, filters))
