"""What API routes return: documents written by orjson, and the error responses OpenAPI lists."""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.responses import Response

from tunefit.app.planning.schemas import ErrorOut


class DocumentResponse(Response):
    """The estimator's documents are plain JSON types already: written by orjson as they are (no
    second validation); the routes' response models document them in OpenAPI."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            # An integer past 64 bits (a stored job result no measurement writes): the standard
            # library writes integers of any size, so the answer is sent, never a 500.
            return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "a gated Hugging Face model: accept its licence, set HF_TOKEN"},
    404: {"model": ErrorOut, "description": "unknown model or GPU id, or a Hugging Face id the Hub does not "
                                            "have (close matches suggested)"},
    413: {"model": ErrorOut, "description": "request body too large"},
    422: {"description": "invalid input, located by field (a Hub repo that is not a causal LM among them)"},
    424: {"model": ErrorOut, "description": "the Hugging Face Hub could not be reached (or was slower than its "
                                            "limit) and no copy of the model is stored"},
}
# Operations that take an optional admin token: without one the public answer, with a wrong one 401.
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "a token was sent and it is neither the admin token nor the API token"},
}
JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorOut, "description": "the service sets an API token and the request lacks it"},
    429: {"model": ErrorOut, "description": "this client created too many jobs lately (see Retry-After)"},
    503: {"model": ErrorOut, "description": "the queue is full, or its broker unreachable"},
}
