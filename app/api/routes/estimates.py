"""``/api/v1`` estimates: one setting, capacity per GPU, a comparison of settings."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tunefit.app.api.deps import answers
from tunefit.app.api.responses import ERRORS, DocumentResponse
from tunefit.app.core.routing import JSONBodyRoute
from tunefit.app.planning import service
from tunefit.app.planning.schemas import CapacityIn, CapacityOut, CompareIn, CompareOut, EstimateIn, EstimateOut

router = APIRouter(route_class=JSONBodyRoute)


@router.post("/estimate", response_model=EstimateOut, responses=ERRORS)
async def estimate(body: EstimateIn, request: Request) -> DocumentResponse:
    """Peak memory of one setting, term by term, with the paper's figure beside it."""
    return DocumentResponse(answers(request).answer("estimate", body, service.estimate_document))


@router.post("/capacity", response_model=CapacityOut, responses=ERRORS)
async def capacity(body: CapacityIn, request: Request) -> DocumentResponse:
    """For every catalog GPU (or those named): fits, max batch, max sequence, GPUs needed."""
    return DocumentResponse(await answers(request).answer_in_thread("capacity", body, service.capacity_document))


@router.post("/compare", response_model=CompareOut, responses=ERRORS)
async def compare(body: CompareIn, request: Request) -> DocumentResponse:
    """The same model under several methods or ranks (default: full vs LoRA vs QLoRA)."""
    return DocumentResponse(await answers(request).answer_in_thread("compare", body, service.compare_document))
