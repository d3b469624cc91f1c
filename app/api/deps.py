"""What the API routes take from the application."""

from __future__ import annotations

from fastapi import Request

from ..core.answers import AnswerCache
from ..jobs import Dispatch


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
