"""The API's documentation page: Swagger UI served from the package, never from a CDN.

FastAPI's own ``/docs`` and ``/redoc`` load their JavaScript and CSS from cdn.jsdelivr.net (and a
favicon from fastapi.tiangolo.com): on a machine without the internet they render nothing. The
``swagger-ui-bundle-v2`` wheel ships Swagger UI 5.31 (which reads the OpenAPI 3.1 FastAPI writes);
its files are mounted under :data:`ASSETS` and the page points there.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/docs"
ASSETS = "/docs-assets"


def mount_api_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI over the app's OpenAPI document) and its assets, both served here."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
                                   # no badge from validator.swagger.io
                                   swagger_ui_parameters={"validatorUrl": None})
