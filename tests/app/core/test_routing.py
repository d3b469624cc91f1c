"""JSONBodyRoute answers exactly as FastAPI's own handler does, only faster."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from tunefit.app.api.routes import estimates, jobs
from tunefit.app.core.routing import JSONBodyRoute, is_json, json_body_model
from tunefit.app.planning.schemas import CapacityIn, CompareIn, EstimateIn


class Inner(BaseModel):
    r: int = Field(8, ge=1)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    n: int = 1
    inner: Inner = Inner()


async def echo(body: Body, request: Request) -> JSONResponse:
    return JSONResponse({"body": body.model_dump(), "path": request.url.path})


def _client(route_class) -> TestClient:
    router = APIRouter(route_class=route_class)
    router.add_api_route("/echo", echo, methods=["POST"])
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


FAST, STANDARD = _client(JSONBodyRoute), _client(APIRouter().route_class)
JSON = "application/json"
CASES = {
    "valid": (b'{"name": "a", "n": 3}', JSON),
    "charset": (b'{"name": "a"}', "application/json; charset=utf-8"),
    "plus-json": (b'{"name": "a"}', "application/merge-patch+json"),
    "missing-field": (b'{"n": 3}', JSON),
    "wrong-type": (b'{"name": "a", "n": "x"}', JSON),
    "nested-bound": (b'{"name": "a", "inner": {"r": 0}}', JSON),
    "extra-field": (b'{"name": "a", "z": 1}', JSON),
    "not-an-object": (b'[1, 2]', JSON),
    "string-number": (b'{"name": "a", "n": "4"}', JSON),
    "no-content-type": (b'{"name": "a"}', None),
    "text-plain": (b'{"name": "a"}', "text/plain"),
}


def _post(client: TestClient, body: bytes, content_type: str | None):
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/echo", content=body, headers=headers)


# pydantic words one error differently when it validates JSON bytes rather than decoded Python:
# a JSON array for a model is "model_type" there, "model_attributes_type" here; same location.
REWORDED = {"not-an-object"}


def _located(response, wording: bool = True) -> list[tuple]:
    detail = response.json().get("detail")
    if not isinstance(detail, list):
        return detail
    return sorted((tuple(d["loc"]), d["type"], d["msg"]) if wording else tuple(d["loc"]) for d in detail)


@pytest.mark.parametrize("case", CASES)
def test_answers_like_fastapis_handler(case):
    body, content_type = CASES[case]
    fast, standard = _post(FAST, body, content_type), _post(STANDARD, body, content_type)
    assert fast.status_code == standard.status_code
    if fast.status_code == 200:
        assert fast.json() == standard.json()
    else:
        wording = case not in REWORDED
        assert _located(fast, wording) == _located(standard, wording)


def test_malformed_json_is_located_under_body():
    fast, standard = _post(FAST, b"{not json", JSON), _post(STANDARD, b"{not json", JSON)
    assert fast.status_code == standard.status_code == 422
    for r in (fast, standard):
        (error,) = r.json()["detail"]
        assert (error["loc"][0], error["type"]) == ("body", "json_invalid")


@pytest.mark.parametrize("value,expected", [
    ("application/json", True), ("Application/JSON; charset=utf-8", True), ("application/ld+json", True),
    ("text/json", False), ("application/jsonx", False), ("", False), (None, False),
])
def test_is_json(value, expected):
    assert is_json(value) is expected


@pytest.mark.parametrize("endpoint,model", [
    (estimates.estimate, EstimateIn), (estimates.capacity, CapacityIn), (estimates.compare, CompareIn),
    (jobs.create_profile, None),  # sync: FastAPI runs it in a thread, as before
    (jobs.get_profile, None),  # no body
], ids=lambda x: getattr(x, "__name__", str(x)))
def test_which_api_endpoints_take_the_fast_path(endpoint, model):
    assert json_body_model(endpoint) is model


def test_a_route_with_dependencies_runs_them():
    """A guard declared as a dependency (the job token) must not be skipped by the fast path."""
    def deny() -> None:
        raise HTTPException(401, "no")

    router = APIRouter(route_class=JSONBodyRoute)
    router.add_api_route("/guarded", echo, methods=["POST"], dependencies=[Depends(deny)])
    app = FastAPI()
    app.include_router(router)
    assert TestClient(app).post("/guarded", json={"name": "x"}).status_code == 401
