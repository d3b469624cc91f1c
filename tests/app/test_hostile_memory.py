"""Memory a client cannot grow: a flood of large, distinct requests (a small config padded to 200 KB,
every request with a new sequence length) leaves the answer cache within its byte budget and the
process's resident memory within that budget plus a stated slack; a comparison echoes a pasted
config once, not once per column.

Resident memory (``/proc/self/statm``), not tracemalloc: orjson's output buffers are traced at the
size they start with (about 2 MB), not the size they are trimmed to."""

import gc
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.config import Settings
from tunefit.app.main import create_app

PADDING = 200_000  # characters of an extra config key: under the 256 KiB body limit
CACHE_BYTES = 8 * 2**20
# Beyond the cache: the working memory of the requests in flight, what the allocator keeps of what
# they freed, and what the first requests of a process build once (validators, estimator caches).
SLACK_BYTES = 48 * 2**20
REQUESTS = 40
COLUMNS = 16


def _config() -> dict:
    return {**TINY_CONFIGS["llama-gqa"], "padding": "x" * PADDING}


def _bodies(kind: str, i: int) -> dict:
    body = {"model": {"config": _config()}, "method": "lora", "seq_len": 64 + i}
    if kind == "compare":
        body["variants"] = [{"method": "lora", "r": r} for r in range(1, COLUMNS + 1)]
    return body


@pytest.fixture
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, run_worker=False, answer_cache_bytes=CACHE_BYTES)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_a_comparison_echoes_a_pasted_config_once(client):
    response = client.post("/api/v1/compare", json=_bodies("compare", 0))
    assert response.status_code == 200, response.text[:300]
    assert len(response.content) < 2 * PADDING
    document = response.json()
    assert document["config"]["padding"] == "x" * PADDING
    digests = {r["document"]["request"]["model"]["config_sha256"] for r in document["results"]}
    assert digests == {document["config_sha256"]}


def test_a_flood_of_large_distinct_requests_stays_within_the_cache_budget(client):
    for kind in ("estimate", "capacity", "compare"):  # warm: what a process builds once
        assert client.post(f"/api/v1/{kind}", json=_bodies(kind, 10_000)).status_code == 200
    gc.collect()
    before = _resident_bytes()
    for i in range(REQUESTS):
        for kind in ("estimate", "capacity", "compare"):
            assert client.post(f"/api/v1/{kind}", json=_bodies(kind, i)).status_code == 200
        assert client.app.state.answers.bytes <= CACHE_BYTES
    gc.collect()
    grown = _resident_bytes() - before
    assert grown <= CACHE_BYTES + SLACK_BYTES, f"grew {grown / 2**20:.1f} MiB"


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
