"""``/api/v1/reports``: stored measurements against this estimator."""

from __future__ import annotations

from fastapi import APIRouter, Request

from tunefit.app.api.deps import database
from tunefit.app.api.responses import DocumentResponse
from tunefit.app.core.routing import JSONBodyRoute
from tunefit.app.reports.documents import report_json

router = APIRouter(route_class=JSONBodyRoute)


@router.get("/reports")
async def reports(request: Request, method: str | None = None, family: str | None = None, split: str | None = None,
                  device: str | None = None, device_kind: str | None = None, source: str | None = None,
                  dtype: str | None = None, attn: str | None = None) -> DocumentResponse:
    """Every stored measurement matching the filters, estimated again by this estimator, with the
    accuracy table (median / max |predicted - measured| / measured, in %)."""
    given = dict(method=method, family=family, split=split, device=device, device_kind=device_kind, source=source,
                 dtype=dtype, attn=attn)
    return DocumentResponse(report_json(database(request), {k: v for k, v in given.items() if v}))
