"""``/api/v1`` catalogs: models and GPUs."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tunefit.app.api.responses import ERRORS, DocumentResponse
from tunefit.app.core.routing import JSONBodyRoute
from tunefit.app.hub import resolver as hub
from tunefit.app.planning import service
from tunefit.app.planning.schemas import GpuOut, ModelOut

router = APIRouter(route_class=JSONBodyRoute)


@router.get("/models", response_model=list[ModelOut])
async def list_models() -> DocumentResponse:
    return DocumentResponse(service.model_list())


# ``:path``: a Hugging Face id (``Qwen/Qwen3-8B``) names a catalog model as well as its short id,
# and any other Hub model (read from the Hub, in the thread pool: it may wait on the network)
@router.get("/models/{model_id:path}", response_model=ModelOut, responses=ERRORS)
async def get_model(model_id: str) -> DocumentResponse:
    if hub.names_hub_model(model_id):
        return DocumentResponse(await run_in_threadpool(service.model_summary, model_id, True))
    return DocumentResponse(service.model_summary(model_id, with_config=True))


@router.get("/gpus", response_model=list[GpuOut])
async def list_gpus() -> DocumentResponse:
    return DocumentResponse(service.gpu_list())
