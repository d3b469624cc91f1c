"""The FastAPI application: REST API under /api/v1, the planning form at /, docs at /docs."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates

from tunefit.app.api import router as api
from tunefit.app.core.answers import AnswerCache
from tunefit.app.core.config import Settings, get_settings
from tunefit.app.core.db import Database
from tunefit.app.core.limits import BodySizeLimit
from tunefit.app.core.security import RateLimiter
from tunefit.app.hub import resolver as hub
from tunefit.app.hub.errors import HubError
from tunefit.app.hub.store import DatabaseStore
from tunefit.app.jobs.executor import Executor, make_executor
from tunefit.app.jobs.service import QueueFull, QueueUnavailable
from tunefit.app.reports.data import import_jsonl
from tunefit.app.web.api_docs import mount_api_docs
from tunefit.app.web.routes import router as web
from tunefit.estimator import ESTIMATOR_VERSION, EstimateError
from tunefit.estimator.errors import UnknownIdError

QUEUE_FULL_RETRY_S = 60  # a CPU job of the validation matrix takes about that long


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the executor's workers (the in-process one, when settings ask for it and torch is
    installed); stop them on shutdown, putting a running job back in the queue."""
    executor: Executor = app.state.executor
    executor.start()
    # What startup built (modules, catalogs, routes) lives as long as the process: keep it out of
    # the cyclic collector's full scans, which otherwise walk it again and again under load.
    gc.freeze()
    yield
    executor.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for ``settings`` (default: the environment's)."""
    settings = settings or get_settings()
    # docs_url and redoc_url None: FastAPI's pages load their assets from a CDN; api_docs serves them
    app = FastAPI(title="tunefit", version=ESTIMATOR_VERSION, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="GPU-memory planner for full fine-tuning, LoRA and QLoRA of transformer LLMs. "
                              "Bytes in every field ending in _bytes; GiB = 2^30 bytes.")
    app.state.settings = settings
    app.state.db = Database(settings.sqlalchemy_url)
    app.state.templates = Jinja2Templates(directory=str(settings.templates_dir))
    app.state.answers = AnswerCache(settings.answer_cache_size, settings.answer_cache_bytes)
    app.state.job_limiter = RateLimiter(settings.job_rate_per_minute, settings.job_rate_burst)
    app.state.auth_failure_limiter = RateLimiter(settings.job_rate_per_minute, settings.job_rate_burst)
    app.state.plan_limiter = RateLimiter(settings.plan_rate_per_minute, settings.plan_rate_burst)
    app.state.executor = make_executor(app.state.db, settings)
    hub.use(hub.HubResolver(settings, DatabaseStore(app.state.db)))
    import_jsonl(app.state.db)  # the measurements shipped in reports/data
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _on(app, UnknownIdError, _unknown_id)
    _on(app, HubError, _hub_error)
    _on(app, EstimateError, _invalid_input)
    _on(app, RequestValidationError, _invalid_body)
    _on(app, QueueUnavailable, _queue_unavailable)
    _on(app, QueueFull, _queue_full)
    for capability in api.ROUTERS:
        app.include_router(capability, prefix=api.PREFIX, tags=api.TAGS)
    app.include_router(web)
    mount_api_docs(app)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok", "estimator_version": ESTIMATOR_VERSION}

    return app


E = TypeVar("E", bound=Exception)


def _on(app: FastAPI, kind: type[E], handler: Callable[[Request, E], Awaitable[JSONResponse]]) -> None:
    """Answer ``kind`` with ``handler`` (Starlette types every handler as taking any Exception)."""
    app.add_exception_handler(kind, cast(Callable[[Request, Exception], Awaitable[JSONResponse]], handler))


async def _unknown_id(_request: Request, exc: UnknownIdError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "suggestions": exc.suggestions}, status_code=404)


async def _hub_error(_request: Request, exc: HubError) -> JSONResponse:
    """A Hub id that cannot be read: its status (404 not found, 403 gated, 424 the Hub unreachable,
    422 not a causal LM), the reason naming the id, and close ids where there are any."""
    return JSONResponse({"detail": str(exc), "suggestions": exc.suggestions}, status_code=exc.status)


async def _invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """pydantic's located errors without echoing the input back: it may be large, and may hold
    values (NaN, Infinity) that JSON cannot carry."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _queue_unavailable(_request: Request, exc: QueueUnavailable) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(QUEUE_FULL_RETRY_S)})


async def _invalid_input(_request: Request, exc: EstimateError) -> JSONResponse:
    """Estimator errors in the shape of pydantic's: located by field, 422."""
    loc = ["body", *exc.field.split(".")]
    return JSONResponse({"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}, status_code=422)


def __getattr__(name: str) -> Any:
    # ``uvicorn tunefit.app.main:app`` builds the app on first access, so importing this module has no
    # side effects (no data directory created) for tests that build their own.
    if name == "app":
        return create_app()
    raise AttributeError(name)
