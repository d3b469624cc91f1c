"""What the API routes take from the application."""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from tunefit.app.core.answers import AnswerCache
from tunefit.app.core.db import Database
from tunefit.app.core.security import check_token, guard_job_creation, is_admin
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
    """Whether the request carries the admin token (``TUNEFIT_ADMIN_TOKEN``): every job, every detail.
    No token is a public caller; the API token too (it creates jobs, it sees no more); any other
    token is refused (401), not silently taken as none."""
    if credentials is None:
        return False
    settings = request.app.state.settings
    if is_admin(settings.admin_token, credentials.credentials):
        return True
    check_token(settings.api_token or _NO_TOKEN, credentials.credentials)
    return False


# A token no request presents: with none configured, a presented token is never valid.
_NO_TOKEN = SecretStr(secrets.token_hex(32))


def may_create_jobs(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """The API's guard on job creation (``Authorization: Bearer <token>``)."""
    guard_job_creation(request, credentials.credentials if credentials else None)
