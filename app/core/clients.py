"""Which browser is asking: a random id in a cookie (no login). What one browser stores (its recent
plans) is shown to it alone; a shared link still works for whoever has it."""

from __future__ import annotations

import re
import secrets

from starlette.requests import Request
from starlette.responses import Response

from tunefit.app.core.db import CLIENT_ID_LENGTH

COOKIE = "tunefit_client"
COOKIE_MAX_AGE_S = 365 * 24 * 3600
_CLIENT_ID = re.compile(rf"[0-9a-f]{{{CLIENT_ID_LENGTH}}}")


def client_id(request: Request) -> tuple[str, bool]:
    """The id in the request's cookie, or a new one; and whether it is new (then :func:`remember`)."""
    presented = request.cookies.get(COOKIE, "")
    if _CLIENT_ID.fullmatch(presented):
        return presented, False
    return secrets.token_hex(CLIENT_ID_LENGTH // 2), True


def remember(response: Response, client: str) -> None:
    """Set the id's cookie: script cannot read it, other sites do not send it."""
    response.set_cookie(COOKIE, client, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="lax")
