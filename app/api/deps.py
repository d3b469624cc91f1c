"""What the API routes take from the application."""

from __future__ import annotations

from fastapi import Request

from ..core.answers import AnswerCache


def answers(request: Request) -> AnswerCache:
    """The application's answer cache. Taken from the request, not through ``Depends``: the
    dependency machinery costs more than the cached answer itself."""
    return request.app.state.answers
