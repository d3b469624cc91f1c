"""The answer cache: least-recently-used, bounded, never caching errors."""

import pytest
from pydantic import BaseModel

from tunefit.app.core.answers import AnswerCache


class Body(BaseModel):
    x: int
    y: int = 0


def test_keeps_the_most_recently_used():
    cache, built = AnswerCache(size=2), []

    def build(body):
        built.append(body.x)
        return {"x": body.x}

    for x in (1, 2, 1, 3, 1, 2):  # 3 evicts 2 (1 was used more recently); 2 is built again
        cache.answer("k", Body(x=x), build)
    assert built == [1, 2, 3, 2]
    assert (cache.hits, cache.misses) == (2, 4)


def test_same_request_spelled_two_ways_is_one_entry():
    cache = AnswerCache(size=8)
    cache.answer("k", Body(x=1), lambda b: {"x": b.x})
    assert cache.answer("k", Body(x=1, y=0), lambda b: {"x": -1}) == b'{"x":1}'


def test_errors_are_not_cached():
    cache = AnswerCache(size=8)

    def fail(body):
        raise ValueError("bad")

    with pytest.raises(ValueError):
        cache.answer("k", Body(x=1), fail)
    assert cache.answer("k", Body(x=1), lambda b: {"ok": True}) == b'{"ok":true}'


def test_size_zero_turns_it_off():
    cache, calls = AnswerCache(size=0), []
    for _ in range(3):
        cache.answer("k", Body(x=1), lambda b: calls.append(1) or {})
    assert len(calls) == 3


def _sized(n: int):
    return lambda body: {"x": body.x, "pad": "p" * n}


def test_the_byte_budget_evicts_the_least_recently_used():
    entry = len(b'{"x":1,"pad":""}') + 100 + len(Body(x=1).model_dump_json())
    cache = AnswerCache(size=100, max_bytes=20 * entry)
    for x in range(40):
        cache.answer("k", Body(x=x), _sized(100))
        assert cache.bytes <= cache.max_bytes
    assert cache.max_bytes - 2 * entry < cache.bytes  # full, give or take an entry's size
    assert cache.answer("k", Body(x=39), lambda b: {"rebuilt": True}) != b'{"rebuilt":true}'  # kept
    assert cache.answer("k", Body(x=0), lambda b: {"rebuilt": True}) == b'{"rebuilt":true}'  # evicted


def test_an_answer_too_large_for_the_budget_is_sent_but_not_kept():
    cache = AnswerCache(size=100, max_bytes=16_000)
    kept = cache.answer("k", Body(x=1), _sized(100))
    large = cache.answer("k", Body(x=2), _sized(2_000))  # more than 1/16 of the budget
    assert b"p" * 2_000 in large and cache.bytes == len(kept) + len(Body(x=1).model_dump_json())
    assert cache.answer("k", Body(x=2), lambda b: {"rebuilt": True}) == b'{"rebuilt":true}'
