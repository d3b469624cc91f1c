"""Every page works without the internet: none references an external host (scripts, styles,
images, links), and /docs serves Swagger UI's assets from the package."""

import re
from html import unescape
from urllib.parse import urlsplit

import pytest

# an absolute URL anywhere in a page: an attribute, a CSS url(...), a script's string
ABSOLUTE_URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*")
# XML namespaces (an inline SVG's xmlns) are names, never fetched
NAMESPACES = ("http://www.w3.org/",)
LOCAL_PATH = re.compile(r'(?:href|src|action)="(/[^"]*)"')
START = ["/", "/?submitted=1&model=llama-2-7b&method=qlora&r=16&all_linear=on&gpu=rtx-4090",
         "/?submitted=1&recipe=none&model=llama-3-8b&method=qlora&batch_size=4&seq_len=2048&gpu=rtx-4090",
         "/jobs", "/reports", "/paper?model=llama-2-7b&r=8", "/docs"]
NOT_PAGES = (".csv", ".json", ".js", ".png")
MAX_PAGES = 40


def _site(client) -> dict[str, str]:
    """The pages reachable from START through the site's own links, up to MAX_PAGES: path -> text."""
    seen: dict[str, str] = {}
    queue = list(START)
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        seen[path] = response.text
        queue += [p for p in map(unescape, LOCAL_PATH.findall(response.text))
                  if p not in seen and not urlsplit(p).path.endswith(NOT_PAGES) and not p.startswith("/docs-assets")]
    return seen


def _external(text: str) -> list[str]:
    return [url for url in ABSOLUTE_URL.findall(text) if not url.startswith(NAMESPACES)]


def test_no_page_references_an_external_host(client):
    pages = _site(client)
    assert len(pages) >= len(START)
    for path, text in pages.items():
        assert _external(text) == [], path


@pytest.mark.parametrize("asset", ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"])
def test_the_api_docs_load_their_assets_from_here(client, asset):
    page = client.get("/docs").text
    assert f'"/docs-assets/{asset}"' in page
    response = client.get(f"/docs-assets/{asset}")
    assert response.status_code == 200 and len(response.content) > 500
    assert _external(client.get("/docs-assets/swagger-ui.css").text) == []
    assert client.get("/redoc").status_code == 404  # FastAPI's, which loads ReDoc from a CDN, is off
