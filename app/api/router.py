"""``/api/v1``: the capability routers under one prefix (OpenAPI at ``/openapi.json``)."""

from __future__ import annotations

from fastapi import APIRouter

from tunefit.app.api.routes import catalog, estimates, jobs, reports

router = APIRouter(prefix="/api/v1", tags=["v1"])
for module in (catalog, estimates, jobs, reports):
    router.include_router(module.router)
