"""The web pages (server-rendered; they work with JavaScript off): the planning form, profiling
jobs, reports and the LoRA paper's figures. Routes parse, call a service, render."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams

from tunefit.app.core.clients import client_id, remember
from tunefit.app.core.ids import JobId, MeasurementId
from tunefit.app.core.security import (
    RateLimited,
    bearer_token,
    client_address,
    guard_job_creation,
    reads_as_admin,
)
from tunefit.app.jobs import service as jobs
from tunefit.app.jobs.executor import no_worker_reason
from tunefit.app.jobs.service import LISTED_JOBS
from tunefit.app.reports.data import plan_evidence, row_of, skipped_measurements
from tunefit.app.reports.data import rows as report_rows
from tunefit.app.reports.documents import filters_from, report_csv, report_document
from tunefit.app.web.job_pages import job_context, jobs_context
from tunefit.app.web.paper import paper_context, parse_paper_query
from tunefit.app.web.plan import evidence_context, page_context, plan_label, profile_from_plan, recent_rows
from tunefit.app.web.report_pages import measurement_context, reports_context
from tunefit.estimator import EstimateError

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    """The form; with ``submitted`` in the query string, the result below it (a shareable URL)."""
    state, settings = request.app.state, request.app.state.settings
    client, new_client = client_id(request)
    context = page_context(request.query_params)
    if context["result"] is not None:
        doc = context["result"]["doc"]
        if _may_store_plan(request):
            state.db.add_plan(client, request.url.query, plan_label(context["form"]), doc["peak_bytes"],
                              settings.plans_per_client, settings.max_stored_plans)
        context["evidence"] = evidence_context(plan_evidence(state.db, doc["request"]), doc)
    context["recent"] = recent_rows(state.db.recent_plans(client, settings.recent_plans))
    context["token_required"] = settings.api_token is not None
    context["no_worker"] = no_worker_reason(state.executor)
    response = state.templates.TemplateResponse(request, "index.html", context)
    if new_client:
        remember(response, client)
    return response


def _may_store_plan(request: Request) -> bool:
    """Within this client's plan rate (past it the page is shown, the plan not stored)."""
    try:
        request.app.state.plan_limiter.take(client_address(request))
    except RateLimited:
        return False
    return True


@router.post("/jobs")
async def create_job(request: Request) -> RedirectResponse:
    """"Measure it" (or "Simulate it", ``device=meta``): queue the plan as a profiling job, then
    show the job's page."""
    form = QueryParams((await request.body()).decode("utf-8", "replace"))
    guard_job_creation(request, form.get("token") or None)
    try:
        body = profile_from_plan(form.get("plan", ""), form.get("steps", "3"), simulated=form.get("device") == "meta")
        state = request.app.state
        client, new_client = client_id(request)
        # off the event loop: handing the job to a Celery broker may wait on the network
        job = await run_in_threadpool(jobs.create_job, state.db, body, state.executor.dispatch, state.settings,
                                      client)
    except EstimateError as exc:
        raise HTTPException(422, str(exc)) from exc
    response = RedirectResponse(f"/jobs/{job.id}", status_code=303)
    if new_client:
        remember(response, client)
    return response


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: JobId, request: Request) -> HTMLResponse:
    """Progress while it runs (the page refreshes itself), predicted vs measured when done."""
    job = request.app.state.db.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no profiling job {job_id!r}")
    settings = request.app.state.settings
    admin = reads_as_admin(settings.admin_token, settings.api_token, bearer_token(request.headers.get("authorization")))
    context = job_context(jobs.job_document(job, private=not admin))
    context["no_worker"] = no_worker_reason(request.app.state.executor) if job.status == "queued" else None
    return request.app.state.templates.TemplateResponse(request, "job.html", context)


@router.get("/jobs", response_class=HTMLResponse)
def job_list(request: Request) -> HTMLResponse:
    client, new_client = client_id(request)  # this browser's jobs
    own = request.app.state.db.list_jobs(LISTED_JOBS, owner=None if new_client else client, everyone=False)
    rows = [jobs.job_document(j, with_result=False) for j in own]
    return request.app.state.templates.TemplateResponse(request, "jobs.html", jobs_context(rows))


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request) -> HTMLResponse:
    """Every measurement, filterable; predicted against measured; error histograms."""
    db = request.app.state.db
    context = reports_context(report_rows(db), filters_from(request.query_params), request.url.query)
    context["skipped"] = skipped_measurements(db)
    return request.app.state.templates.TemplateResponse(request, "reports.html", context)


@router.get("/reports.csv")
def reports_csv(request: Request) -> Response:
    body = report_csv(report_rows(request.app.state.db), filters_from(request.query_params))
    return Response(body, media_type="text/csv", headers={"content-disposition": 'attachment; filename="reports.csv"'})


@router.get("/reports.json")
def reports_json(request: Request) -> JSONResponse:
    db = request.app.state.db
    body = report_document(report_rows(db), filters_from(request.query_params), skipped_measurements(db))
    return JSONResponse(body, headers={"content-disposition": 'attachment; filename="reports.json"'})


@router.get("/reports/{measurement_id}", response_class=HTMLResponse)
def measurement_page(measurement_id: MeasurementId, request: Request) -> HTMLResponse:
    db = request.app.state.db
    measurement = db.get_measurement(measurement_id)
    if measurement is None:
        raise HTTPException(404, f"no measurement {measurement_id}")
    row = row_of(measurement)
    if row is None:
        raise HTTPException(422, f"measurement {measurement_id} is stored in a form this estimator cannot read "
                                 "(a request it refuses, or numbers no measurement reports); the reports leave it out")
    context = measurement_context(measurement.id, measurement.result, row)
    return request.app.state.templates.TemplateResponse(request, "measurement.html", context)


@router.get("/paper", response_class=HTMLResponse)
def paper_page(request: Request) -> HTMLResponse:
    """The LoRA paper's figures for a catalog model and rank."""
    try:
        model_id, r, targets = parse_paper_query(request.query_params)
    except EstimateError as exc:
        raise HTTPException(422, str(exc)) from exc
    context = paper_context(model_id, r, targets)  # an unknown model id answers 404
    return request.app.state.templates.TemplateResponse(request, "paper.html", context)
