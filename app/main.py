"""The FastAPI application (the web service grows here; see issue 'Web service')."""

from __future__ import annotations

from fastapi import FastAPI

from estimator import ESTIMATOR_VERSION

app = FastAPI(title="tunefit", version=ESTIMATOR_VERSION)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok", "estimator_version": ESTIMATOR_VERSION}
