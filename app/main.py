"""The FastAPI application: REST API under /api/v1, the planning form at /, docs at /docs."""

from __future__ import annotations

import gc
import logging
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates

from tunefit import profiler
from tunefit.estimator import ESTIMATOR_VERSION, EstimateError
from tunefit.estimator.errors import UnknownIdError

from .api.v1 import router as api_v1
from .core.answers import AnswerCache
from .core.config import Settings, get_settings
from .core.limits import BodySizeLimit
from .core.security import RateLimiter
from .db import Database
from .jobs import QueueFull, QueueUnavailable, Worker
from .reports import import_jsonl
from .web import router as web

log = logging.getLogger("tunefit")
QUEUE_FULL_RETRY_S = 60  # a CPU job of the validation matrix takes about that long


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Start the in-process worker (when settings ask for it and torch is installed); stop it on
    shutdown, putting its running job back in the queue."""
    settings: Settings = app.state.settings
    worker = None
    if settings.executor == "celery":
        log.info("profiling jobs go to Celery workers through %s", _redacted(settings.broker_url))
    elif settings.run_worker and profiler.available():
        worker = Worker(app.state.db, settings)
        thread = worker.start()
    elif settings.run_worker:
        log.warning("torch is not installed: profiling jobs stay queued for a `tunefit worker` elsewhere")
    app.state.worker = worker
    # What startup built (modules, catalogs, routes) lives as long as the process: keep it out of
    # the cyclic collector's full scans, which otherwise walk it again and again under load.
    gc.freeze()
    yield
    if worker is not None:
        worker.stop.set()
        thread.join(timeout=60)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application for ``settings`` (default: the environment's)."""
    settings = settings or get_settings()
    app = FastAPI(title="tunefit", version=ESTIMATOR_VERSION, lifespan=lifespan,
                  description="GPU-memory planner for full fine-tuning, LoRA and QLoRA of transformer LLMs. "
                              "Bytes in every field ending in _bytes; GiB = 2^30 bytes.")
    app.state.settings = settings
    app.state.db = Database(settings.sqlalchemy_url)
    app.state.templates = Jinja2Templates(directory=str(settings.templates_dir))
    app.state.answers = AnswerCache(settings.answer_cache_size)
    app.state.job_limiter = RateLimiter(settings.job_rate_per_minute, settings.job_rate_burst)
    app.state.worker = None
    app.state.celery = None
    if settings.executor == "celery":
        from .fleet import make_celery

        app.state.celery = make_celery(settings)
    import_jsonl(app.state.db)  # the measurements shipped in reports/data
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(UnknownIdError, _unknown_id)
    app.add_exception_handler(EstimateError, _invalid_input)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(QueueUnavailable, _queue_unavailable)
    app.add_exception_handler(QueueFull, _queue_full)
    app.include_router(api_v1)
    app.include_router(web)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok", "estimator_version": ESTIMATOR_VERSION}

    return app


async def _unknown_id(_request: Request, exc: UnknownIdError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "suggestions": exc.suggestions}, status_code=404)


async def _invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """pydantic's located errors without echoing the input back: it may be large, and may hold
    values (NaN, Infinity) that JSON cannot carry."""
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


async def _queue_unavailable(_request: Request, exc: QueueUnavailable) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(QUEUE_FULL_RETRY_S)})


def _redacted(url: str | None) -> str:
    """A broker URL without its password."""
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url or "")


async def _invalid_input(_request: Request, exc: EstimateError) -> JSONResponse:
    """Estimator errors in the shape of pydantic's: located by field, 422."""
    loc = ["body", *exc.field.split(".")]
    return JSONResponse({"detail": [{"loc": loc, "msg": exc.message, "type": "value_error"}]}, status_code=422)


def __getattr__(name: str):
    # ``uvicorn tunefit.app.main:app`` builds the app on first access, so importing this module has no
    # side effects (no data directory created) for tests that build their own.
    if name == "app":
        return create_app()
    raise AttributeError(name)
