"""Access control on profiling jobs: API token, per-client rate limits, the queue cap, the memory
check before queueing, and local checkpoints only under the configured directories."""

import json
import os

import pytest
from fastapi.testclient import TestClient

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core import security
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database
from tunefit.app.core.security import RateLimited, RateLimiter, bearer_token
from tunefit.app.jobs.worker import Worker
from tunefit.app.main import create_app

GIB = 2**30
TINY = {"model": {"config": TINY_CONFIGS["llama-gqa"]}, "method": "lora", "device": "cpu", "batch_size": 1,
        "seq_len": 8, "lora": {"r": 4}, "steps": 1}
ESTIMATE = {"model": "llama-2-7b", "method": "qlora", "batch_size": 1, "seq_len": 512}
TOKEN = "correct horse battery staple"


def _client(tmp_path, **settings) -> TestClient:
    base = dict(data_dir=tmp_path, run_worker=False)
    return TestClient(create_app(Settings(**{**base, **settings})), raise_server_exceptions=False)


def _jobs(client) -> int:
    return len(client.get("/api/v1/profile").json())


# ---- API token ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    with _client(tmp_path_factory.mktemp("guarded"), api_token=TOKEN, job_rate_per_minute=0) as c:
        yield c


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": f"Basic {TOKEN}"}, 401),
    ({"Authorization": f"Bearer {TOKEN}x"}, 401),
    ({"Authorization": f"Bearer {TOKEN}"}, 202),
    ({"Authorization": f"bearer {TOKEN}"}, 202),
], ids=["none", "wrong", "basic-scheme", "longer", "right", "scheme-case-insensitive"])
def test_job_creation_needs_the_token(guarded, headers, status):
    before = _jobs(guarded)
    r = guarded.post("/api/v1/profile", json=TINY, headers=headers)
    assert r.status_code == status, r.text
    assert _jobs(guarded) == before + (status == 202)
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_estimates_and_reads_stay_public(guarded):
    assert guarded.post("/api/v1/estimate", json=ESTIMATE).status_code == 200
    assert guarded.get("/api/v1/profile").status_code == 200
    assert guarded.get("/").status_code == 200


def test_the_web_form_asks_for_the_token_and_checks_it(guarded):
    page = guarded.get("/", params={"model": "llama-2-7b", "method": "lora", "submitted": "1"}).text
    assert 'name="token"' in page
    plan = "recipe=none&model=llama-2-7b&method=lora&device=cpu&batch_size=1&seq_len=8&submitted=1"
    refused = guarded.post("/jobs", data={"plan": plan, "steps": "1"}, follow_redirects=False)
    assert refused.status_code == 401
    accepted = guarded.post("/jobs", data={"plan": plan, "steps": "1", "token": TOKEN, "device": "meta"},
                            follow_redirects=False)
    assert accepted.status_code == 303, accepted.text


def test_no_token_field_when_the_service_sets_none(client):
    page = client.get("/", params={"model": "llama-2-7b", "method": "lora", "submitted": "1"}).text
    assert 'id="measure-form"' in page and 'name="token"' not in page


def test_the_token_is_compared_with_compare_digest(monkeypatch):
    calls = []
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or a == b)
    expected = Settings(api_token="s3cret").api_token
    security.check_token(expected, "s3cret")
    with pytest.raises(security.Unauthorized):
        security.check_token(expected, "guess")
    assert calls == [(b"s3cret", b"s3cret"), (b"guess", b"s3cret")]


@pytest.mark.parametrize("header,token", [
    (None, None), ("", None), ("Bearer", None), ("Bearer   ", None), ("Bearer abc", "abc"),
    ("BEARER abc ", "abc"), ("Token abc", None),
], ids=["absent", "empty", "scheme-only", "blank", "plain", "upper-scheme", "other-scheme"])
def test_bearer_header_parsing(header, token):
    assert bearer_token(header) == token


def test_an_empty_token_setting_means_no_token():
    assert Settings(api_token=" ").api_token is None


# ---- rate limits ----------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_bucket_allows_the_burst_then_refills_at_the_rate():
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=2, clock=clock)  # one job every 10 s
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"] == "10"
    limiter.take("b")  # clients are counted apart
    clock.now += 9.9
    with pytest.raises(RateLimited):
        limiter.take("a")
    clock.now += 0.2
    limiter.take("a")


def test_zero_rate_means_no_limit():
    limiter = RateLimiter(per_minute=0, burst=1)
    for _ in range(100):
        limiter.take("a")


def test_the_limiter_remembers_a_bounded_number_of_clients():
    limiter = RateLimiter(per_minute=1, burst=1, clock=Clock(), max_clients=3)
    for client in ("a", "b", "c", "d"):
        limiter.take(client)
    assert list(limiter._buckets) == ["b", "c", "d"]


def test_job_creation_is_rate_limited_per_client_and_estimates_are_not(tmp_path):
    with _client(tmp_path, job_rate_per_minute=1, job_rate_burst=2) as c:
        assert [c.post("/api/v1/profile", json=TINY).status_code for _ in range(3)] == [202, 202, 429]
        r = c.post("/api/v1/profile", json=TINY)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert _jobs(c) == 2
        assert all(c.post("/api/v1/estimate", json=ESTIMATE).status_code == 200 for _ in range(10))


# ---- queue cap ---------------------------------------------------------------------------------------

def test_the_queue_is_capped_and_frees_as_workers_take_jobs(tmp_path):
    with _client(tmp_path, max_queued_jobs=2, job_rate_per_minute=0) as c:
        assert [c.post("/api/v1/profile", json=TINY).status_code for _ in range(2)] == [202, 202]
        full = c.post("/api/v1/profile", json=TINY)
        assert full.status_code == 503 and "TUNEFIT_MAX_QUEUED_JOBS" in full.json()["detail"]
        assert full.headers["retry-after"]
        Database(c.app.state.settings.sqlalchemy_url).claim_next("a-worker")
        assert c.post("/api/v1/profile", json=TINY).status_code == 202


# ---- too large for its worker ----------------------------------------------------------------------

@pytest.mark.parametrize("body,refused", [
    ({"model": "llama-2-7b", "method": "full", "dtype": "fp32", "device": "cpu"}, "memory guard"),
    ({"model": "llama-2-70b", "method": "full", "dtype": "fp32", "batch_size": 8, "seq_len": 4096},
     "largest GPU in the catalog"),
    ({"model": "llama-2-70b", "method": "full", "dtype": "fp32", "batch_size": 8, "seq_len": 4096,
      "device": "meta", "target": "cuda"}, None),
    (TINY, None),
], ids=["7b-on-a-4gib-cpu-guard", "70b-full-fits-no-gpu", "simulation-allocates-nothing", "tiny-fits"])
def test_a_job_that_would_not_fit_is_refused_with_the_estimate(tmp_path, body, refused):
    with _client(tmp_path, job_memory_limit_bytes=4 * GIB, job_rate_per_minute=0) as c:
        r = c.post("/api/v1/profile", json=body)
        if refused is None:
            assert r.status_code == 202, r.text
            return
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", "device"]
        assert "GiB at peak" in detail["msg"] and refused in detail["msg"]
        assert _jobs(c) == 0


# ---- local checkpoints ------------------------------------------------------------------------------

def _checkpoint(directory, config=None):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config or TINY_CONFIGS["llama-gqa"]))
    return directory


@pytest.fixture
def roots(tmp_path):
    allowed = tmp_path / "models"
    outside = tmp_path / "elsewhere"
    _checkpoint(allowed / "tiny")
    _checkpoint(outside / "secret")
    return allowed, outside


def _with_checkpoint(path: str) -> dict:
    return {**TINY, "model": {"checkpoint": path}}


def test_a_checkpoint_under_a_configured_directory_is_queued_by_its_real_path(tmp_path, roots):
    allowed, _ = roots
    with _client(tmp_path / "data", checkpoint_dirs=[allowed], job_rate_per_minute=0) as c:
        for path in ("tiny", str(allowed / "tiny"), "tiny/"):
            r = c.post("/api/v1/profile", json=_with_checkpoint(path))
            assert r.status_code == 202, r.text
            stored = json.loads(c.app.state.db.get_job(r.json()["id"]).request_json)
            assert stored["model"] == {"checkpoint": str((allowed / "tiny").resolve())}
            assert r.json()["request"]["model"] == {"checkpoint": "tiny"}  # documents show no server paths
            assert r.json()["label"].startswith("tiny ")


def _refusals(allowed, outside):
    (allowed / "link-out").symlink_to(outside / "secret", target_is_directory=True)
    leaky = _checkpoint(allowed / "leaky")
    (leaky / "model.safetensors").symlink_to(outside / "secret" / "config.json")
    nested = _checkpoint(allowed / "nested")
    (nested / "sub").mkdir()
    (nested / "sub" / "deep").symlink_to(outside, target_is_directory=True)
    (allowed / "empty").mkdir()
    _checkpoint(allowed / "list", config=[1, 2])
    (allowed / "broken").mkdir()
    (allowed / "broken" / "config.json").write_text("{not json")
    return {
        "dot-dot": ("../elsewhere/secret", "'..'"),
        "dot-dot-inside": ("tiny/../tiny", "'..'"),
        "absolute-outside": (str(outside / "secret"), "not a checkpoint directory"),
        "symlinked-directory-out": ("link-out", "not a checkpoint directory"),
        "file-linking-out": ("leaky", "links outside"),
        "nested-link-out": ("nested", "links outside"),
        "missing": ("nope", "not a checkpoint directory"),
        "a-file": ("tiny/config.json", "not a checkpoint directory"),
        "no-config": ("empty", "no config.json"),
        "config-not-an-object": ("list", "JSON object"),
        "config-not-json": ("broken", "not valid JSON"),
    }


REFUSALS = ["dot-dot", "dot-dot-inside", "absolute-outside", "symlinked-directory-out", "file-linking-out",
            "nested-link-out", "missing", "a-file", "no-config", "config-not-an-object", "config-not-json"]


@pytest.mark.parametrize("case", REFUSALS)
def test_checkpoint_paths_outside_or_unreadable_are_refused(tmp_path, roots, case):
    path, reason = _refusals(*roots)[case]
    with _client(tmp_path / "data", checkpoint_dirs=[roots[0]], job_rate_per_minute=0) as c:
        r = c.post("/api/v1/profile", json=_with_checkpoint(path))
        assert r.status_code == 422, r.text
        detail = r.json()["detail"][0]
        assert detail["loc"] == ["body", "model", "checkpoint"] and reason in detail["msg"]
        assert _jobs(c) == 0


def test_checkpoints_are_off_unless_directories_are_configured(tmp_path, roots):
    with _client(tmp_path / "data", job_rate_per_minute=0) as c:
        r = c.post("/api/v1/profile", json=_with_checkpoint(str(roots[0] / "tiny")))
        assert r.status_code == 422 and "TUNEFIT_CHECKPOINT_DIRS" in r.text


def test_estimates_take_no_checkpoint_paths(client, roots):
    r = client.post("/api/v1/estimate", json={**ESTIMATE, "model": {"checkpoint": str(roots[0] / "tiny")}})
    assert r.status_code == 422


def test_the_worker_checks_the_path_again_before_reading_it(tmp_path, roots):
    allowed, outside = roots
    settings = Settings(data_dir=tmp_path / "data", run_worker=False, checkpoint_dirs=[allowed],
                        job_rate_per_minute=0, job_memory_limit_bytes=8 * GIB)
    with TestClient(create_app(settings)) as c:
        job_id = c.post("/api/v1/profile", json=_with_checkpoint("tiny")).json()["id"]
    # between queueing and running, the directory is swapped for a link out of the allowed tree
    (allowed / "tiny").rename(allowed / "tiny-moved")
    os.symlink(outside / "secret", allowed / "tiny", target_is_directory=True)
    db = Database(settings.sqlalchemy_url)
    assert Worker(db, settings).run_once() == job_id
    job = db.get_job(job_id)
    assert job.status == "failed" and job.error.startswith("refused:") and job.result is None
