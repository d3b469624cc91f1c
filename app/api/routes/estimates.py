"""``/api/v1`` estimates: one setting, capacity per GPU, a comparison of settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tunefit.app.api.deps import answers
from tunefit.app.api.responses import ERRORS, DocumentResponse
from tunefit.app.core.routing import JSONBodyRoute
from tunefit.app.hub import resolver as hub
from tunefit.app.planning import service
from tunefit.app.planning.schemas import (
    CapacityIn,
    CapacityOut,
    CompareIn,
    CompareOut,
    EstimateIn,
    EstimateOut,
    SettingIn,
)

router = APIRouter(route_class=JSONBodyRoute)


@router.post("/estimate", response_model=EstimateOut, responses=ERRORS)
async def estimate(body: EstimateIn, request: Request) -> DocumentResponse:
    """Peak memory of one setting, term by term, with the paper's figure beside it."""
    if hub.names_hub_model(body.model, body.revision) or service.may_simulate(body):
        return await _hub_answer(request, "estimate", body, service.estimate_document)
    return DocumentResponse(answers(request).answer("estimate", body, service.estimate_document))


@router.post("/capacity", response_model=CapacityOut, responses=ERRORS)
async def capacity(body: CapacityIn, request: Request) -> DocumentResponse:
    """For every catalog GPU (or those named): fits, max batch, max sequence, GPUs needed."""
    return await _hub_answer(request, "capacity", body, service.capacity_document)


@router.post("/compare", response_model=CompareOut, responses=ERRORS)
async def compare(body: CompareIn, request: Request) -> DocumentResponse:
    """The same model under several methods or ranks (default: full vs LoRA vs QLoRA)."""
    return await _hub_answer(request, "compare", body, service.compare_document)


async def _hub_answer(request: Request, kind: str, body: SettingIn,
                      build: Callable[[Any], dict[str, Any]]) -> DocumentResponse:
    """``build(body)`` in the thread pool (a model the formulas do not know is simulated there),
    cached; a Hub model is resolved first (in the thread pool too: it may ask the Hub), and its
    answers kept under the commit it resolved to, so a new commit on the branch is answered anew."""
    if hub.names_hub_model(body.model, body.revision):
        assert isinstance(body.model, str)
        commit = await run_in_threadpool(hub.active().commit, body.model, body.revision)
        kind = f"{kind}@{commit}"
    return DocumentResponse(await answers(request).answer_in_thread(kind, body, build))
