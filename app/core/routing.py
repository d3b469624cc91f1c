"""A route class that validates JSON bodies straight from their bytes.

FastAPI's own request handler decodes a JSON body with the standard library, parses the
``Content-Type`` header with ``email.message``, then validates the decoded dict through the
dependency solver: together more than the cached estimate costs. For an ``async def
endpoint(body: Model, request: Request)`` sent as JSON, this route runs pydantic's
``model_validate_json`` on the raw bytes instead (one pass in Rust) and calls the endpoint
directly. Everything else (other signatures, routes with dependencies, other content types, sync
endpoints) goes through FastAPI's handler unchanged, and OpenAPI is built from the same
declaration either way.
Validation errors are raised as FastAPI's, located under ``body`` as FastAPI locates them.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def json_body_model(endpoint: Callable[..., Any]) -> type[BaseModel] | None:
    """The model of ``endpoint``'s ``body`` parameter when its signature is exactly
    ``async (body: Model, request: Request)``, else None."""
    if not inspect.iscoroutinefunction(endpoint):
        return None
    hints = typing.get_type_hints(endpoint)
    if list(inspect.signature(endpoint).parameters) != ["body", "request"] or hints.get("request") is not Request:
        return None
    model = hints.get("body")
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<subtype>+json``, parameters (charset) allowed."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def located(errors: list[Any]) -> list[dict[str, Any]]:
    """pydantic's errors with ``body`` in front of each location, as FastAPI reports them."""
    return [{**e, "loc": ("body", *e["loc"])} for e in errors]


class JSONBodyRoute(APIRoute):
    """An ``APIRoute`` whose JSON-body endpoints skip the generic body pipeline (see module doc)."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        model = json_body_model(self.endpoint)
        if model is None or self.dependencies:  # dependencies (an auth guard) run in FastAPI's path only
            return standard
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            if not is_json(request.headers.get("content-type")):
                return await standard(request)
            raw = await request.body()
            try:
                body = model.model_validate_json(raw)
            except ValidationError as exc:
                raise RequestValidationError(located(exc.errors())) from None
            return await endpoint(body=body, request=request)

        return handler
