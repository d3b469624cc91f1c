"""``/api/v1``: the capability routers, each mounted under the prefix by ``main.create_app`` (one
level of routers, not a router of routers: each level costs every request a scan)."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter

from tunefit.app.api.routes import catalog, estimates, jobs, reports

PREFIX = "/api/v1"
TAGS: list[str | Enum] = ["v1"]
ROUTERS: tuple[APIRouter, ...] = (catalog.router, estimates.router, jobs.router, reports.router)
