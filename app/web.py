"""The planning form (server-rendered; works with JavaScript off)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .views import page_context, plan_label, recent_rows

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
