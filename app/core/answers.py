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


class AnswerCache:
    """Least-recently-used cache of JSON answers (``size`` 0 turns it off)."""

    def __init__(self, size: int):
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def answer(self, kind: str, body: BaseModel, build: Callable[[Any], dict[str, Any]]) -> bytes:
        """The JSON of ``build(body)``, from the cache when this request was answered before."""
        if not self.size:
            return orjson.dumps(build(body))
        key = (kind, body.model_dump_json())
        cached = self._entries.get(key)
        if cached is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return cached
        self.misses += 1
        answer = orjson.dumps(build(body))
        self._entries[key] = answer
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return answer
