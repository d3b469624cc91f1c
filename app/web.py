"""The planning form (server-rendered; works with JavaScript off)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import QueryParams

from estimator import EstimateError

from . import jobs
from .views import job_context, jobs_context, page_context, plan_label, profile_from_plan, recent_rows

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    """The form; with ``submitted`` in the query string, the result below it (a shareable URL)."""
    state = request.app.state
    context = page_context(request.query_params)
    if context["result"] is not None:
        state.db.add_plan(request.url.query, plan_label(context["form"]), context["result"]["doc"]["peak_bytes"])
    context["recent"] = recent_rows(state.db.recent_plans(state.settings.recent_plans))
    return state.templates.TemplateResponse(request, "index.html", context)


@router.post("/jobs")
async def create_job(request: Request) -> RedirectResponse:
    """"Measure it for real": queue the plan as a profiling job, then show the job's page."""
    form = QueryParams((await request.body()).decode("utf-8", "replace"))
    try:
        body = profile_from_plan(form.get("plan", ""), form.get("steps", "3"))
        job = jobs.create_job(request.app.state.db, body)
    except EstimateError as exc:
        raise HTTPException(422, str(exc)) from exc
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request) -> HTMLResponse:
    """Progress while it runs (the page refreshes itself), predicted vs measured when done."""
    job = request.app.state.db.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no profiling job {job_id!r}")
    context = job_context(jobs.job_document(job))
    return request.app.state.templates.TemplateResponse(request, "job.html", context)


@router.get("/jobs", response_class=HTMLResponse)
def job_list(request: Request) -> HTMLResponse:
    rows = [jobs.job_document(j, with_result=False) for j in request.app.state.db.list_jobs(50)]
    return request.app.state.templates.TemplateResponse(request, "jobs.html", jobs_context(rows))
