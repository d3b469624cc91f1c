"""What the API routes take from the application."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tunefit.app.core.answers import AnswerCache
from tunefit.app.core.db import Database
from tunefit.app.core.security import guard_job_creation, reads_as_admin
from tunefit.app.jobs.executor import Executor

bearer = HTTPBearer(auto_error=False, description="the service's API token (TUNEFIT_API_TOKEN), when it sets one")


def answers(request: Request) -> AnswerCache:
    """The application's answer cache. Taken from the request, not through ``Depends``: the
    dependency machinery costs more than the cached answer itself."""
    return request.app.state.answers


def database(request: Request) -> Database:
    return request.app.state.db


def executor(request: Request) -> Executor:
    """Where profiling jobs run (local or Celery), chosen when the application was created."""
    return request.app.state.executor


def is_admin_caller(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> bool:
    """Whether the request carries the admin token (``TUNEFIT_ADMIN_TOKEN``): see ``reads_as_admin``."""
    settings = request.app.state.settings
    return reads_as_admin(settings.admin_token, settings.api_token, credentials.credentials if credentials else None)


def may_create_jobs(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The API's guard on job creation (``Authorization: Bearer <token>``)."""
    guard_job_creation(request, credentials.credentials if credentials else None)
