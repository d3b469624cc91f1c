"""A bounded cache of answers: every API answer is a pure function of its validated request.

Keys are the request's canonical JSON (defaults filled in, so two spellings of one setting
share an entry); values are the JSON bytes sent back, immutable. Errors are never cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

# An answer larger than this share of the byte budget is sent but not kept: one such answer would
# push out many ordinary ones, and a client that sends it is rarely asking the same again.
LARGEST_SHARE = 16


class AnswerCache:
    """Least-recently-used cache of JSON answers, bounded by entries (``size``; 0 turns it off) and
    by bytes (``max_bytes``: keys and answers together, so large pasted configs cannot grow it past
    the budget however many distinct requests arrive)."""

    def __init__(self, size: int, max_bytes: int = 32 * 2**20):
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def answer(self, kind: str, body: BaseModel, build: Callable[[Any], dict[str, Any]]) -> bytes:
        """The JSON of ``build(body)``, from the cache when this request was answered before."""
        key, cached = self._lookup(kind, body)
        if cached is not None:
            return cached
        return self._store(key, orjson.dumps(build(body)))

    async def answer_in_thread(self, kind: str, body: BaseModel, build: Callable[[Any], dict[str, Any]]) -> bytes:
        """:meth:`answer`, building a missing answer in the thread pool: a build that takes
        milliseconds (a capacity search over every GPU) then does not hold up the event loop, which
        goes on answering the quick requests in between (the GIL is handed over every few ms)."""
        key, cached = self._lookup(kind, body)
        if cached is not None:
            return cached
        return self._store(key, await run_in_threadpool(lambda: orjson.dumps(build(body))))

    def _lookup(self, kind: str, body: BaseModel) -> tuple[tuple[str, str] | None, bytes | None]:
        if not self.size:
            return None, None
        key = (kind, body.model_dump_json())
        cached = self._entries.get(key)
        if cached is not None:
            self.hits += 1
            self._entries.move_to_end(key)
        else:
            self.misses += 1
        return key, cached

    def _store(self, key: tuple[str, str] | None, answer: bytes) -> bytes:
        cost = _cost(key, answer) if key is not None else 0
        if key is None or cost * LARGEST_SHARE > self.max_bytes or key in self._entries:
            return answer
        self._entries[key] = answer
        self.bytes += cost
        while len(self._entries) > self.size or self.bytes > self.max_bytes:
            old_key, old_answer = self._entries.popitem(last=False)
            self.bytes -= _cost(old_key, old_answer)
        return answer


def _cost(key: tuple[str, str], answer: bytes) -> int:
    """Bytes an entry holds: its answer and its key (the request's JSON, a pasted config included)."""
    return len(answer) + len(key[1])
