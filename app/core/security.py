"""Who may create profiling jobs (they spend GPU time): an optional API token, per-client rate limits.

Estimates are public. Job creation needs ``Authorization: Bearer <token>`` (the web form: a token
field) when ``TUNEFIT_API_TOKEN`` is set, and each client (by address) may create
``TUNEFIT_JOB_RATE_PER_MINUTE`` jobs a minute, in bursts of ``TUNEFIT_JOB_RATE_BURST``.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import SecretStr
from starlette.exceptions import HTTPException
from starlette.requests import Request

BEARER = "bearer"
# Clients whose buckets are remembered; the least recently seen are forgotten past this (a
# forgotten client starts again with a full bucket), so memory stays bounded under address floods.
MAX_TRACKED_CLIENTS = 10_000


class Unauthorized(HTTPException):
    """401 with the ``WWW-Authenticate`` challenge RFC 6750 §3 asks for."""

    def __init__(self, detail: str):
        super().__init__(401, detail, headers={"WWW-Authenticate": 'Bearer realm="tunefit"'})


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != BEARER:
        return None
    return token.strip() or None


def check_token(expected: SecretStr | None, presented: str | None) -> None:
    """Raise :class:`Unauthorized` unless no token is configured or ``presented`` equals it.

    ``hmac.compare_digest`` takes time independent of where the strings differ, so the response
    time tells an attacker nothing about how much of a guess was right.
    """
    if expected is None:
        return
    if presented is None:
        raise Unauthorized("creating profiling jobs needs an API token: send 'Authorization: Bearer <token>'")
    if not _matches(expected, presented):
        raise Unauthorized("the API token is not valid")


def reads_as_admin(admin_token: SecretStr | None, api_token: SecretStr | None, presented: str | None) -> bool:
    """Whether a read sees everything (every job, hosts, paths): with the admin token. No token, or
    the API token (it creates jobs, it sees no more), is a public reader; any other token is refused
    (:class:`Unauthorized`), not silently taken as none."""
    if presented is None:
        return False
    if _matches(admin_token, presented):
        return True
    if _matches(api_token, presented):
        return False
    raise Unauthorized("the token is neither the admin token nor the API token")


def _matches(expected: SecretStr | None, presented: str) -> bool:
    """Whether ``presented`` is the configured token (never when none is configured)."""
    return expected is not None and hmac.compare_digest(presented.encode(), expected.get_secret_value().encode())


class RateLimited(HTTPException):
    def __init__(self, retry_after_s: float, per_minute: float):
        super().__init__(429, f"too many profiling jobs from this client (limit {per_minute:g} a minute); "
                              f"retry in {math.ceil(retry_after_s)} s",
                         headers={"Retry-After": str(math.ceil(retry_after_s))})


class RateLimiter:
    """A token bucket per client: ``burst`` jobs at once, refilled at ``per_minute`` a minute.

    ``per_minute`` 0 turns the limit off. Thread-safe (sync routes run in a thread pool).
    """

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_TRACKED_CLIENTS):
        self.per_second = per_minute / 60
        self.per_minute = per_minute
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client: (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one of ``client``'s tokens, or raise :class:`RateLimited` with the wait."""
        if self.per_second <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                raise RateLimited((1 - tokens) / self.per_second, self.per_minute)
            self._buckets[client] = (tokens - 1, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def guard_job_creation(request: Request, presented: str | None) -> None:
    """Creating a profiling job (API or form): the API token when one is set, then this client's
    rate limit. Failed attempts spend a bucket of their own (``auth_failure_limiter``), so guessing
    is throttled and cannot use up the allowance of a token holder at the same address."""
    state, client = request.app.state, client_address(request)
    try:
        check_token(state.settings.api_token, presented)
    except Unauthorized:
        state.auth_failure_limiter.take(client)
        raise
    state.job_limiter.take(client)
