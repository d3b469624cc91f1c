"""What the API routes take from the application."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..core.answers import AnswerCache
from ..core.security import check_token
from ..jobs import Dispatch

bearer = HTTPBearer(auto_error=False, description="the service's API token (TUNEFIT_API_TOKEN), when it sets one")


def answers(request: Request) -> AnswerCache:
    """The application's answer cache. Taken from the request, not through ``Depends``: the
    dependency machinery costs more than the cached answer itself."""
    return request.app.state.answers


def dispatcher(request: Request) -> Dispatch | None:
    """How a new profiling job reaches a worker: None for the local worker (it polls the
    database), else a send to the Celery queue of the job's target."""
    app = request.app
    if app.state.celery is None:
        return None
    from ..fleet import dispatch

    return lambda job, body: dispatch(app.state.celery, job, body.target, body.device)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def guard_job_creation(request: Request, presented: str | None) -> None:
    """Creating a profiling job: this client's rate limit, then the API token when one is set."""
    request.app.state.job_limiter.take(client_address(request))
    check_token(request.app.state.settings.api_token, presented)


def may_create_jobs(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The API's guard on job creation (``Authorization: Bearer <token>``)."""
    guard_job_creation(request, credentials.credentials if credentials else None)
