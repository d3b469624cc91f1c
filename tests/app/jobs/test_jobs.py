"""Profiling jobs: the API, the worker's life cycle (failures, the next job, restarts)."""

import time
from datetime import timedelta

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, now
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.jobs.service import create_job
from tunefit.app.jobs.worker import Worker

TINY = {"model": {"config": TINY_CONFIGS["llama-gqa"]}, "method": "lora", "device": "cpu", "batch_size": 1,
        "seq_len": 8, "lora": {"r": 4}, "steps": 2}
GIB = 2**30


# ---- API -----------------------------------------------------------------------------------------

def test_create_then_read_a_job(client):
    r = client.post("/api/v1/profile", json=TINY)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["result"] is None and job["progress"] is None
    again = client.get(job["url"]).json()
    assert again["id"] == job["id"] and again["request"]["steps"] == 2
    assert job["id"] in [j["id"] for j in client.get("/api/v1/profile").json()]


@pytest.mark.parametrize("body,status", [
    ({**TINY, "steps": 0}, 422),
    ({**TINY, "lora": {"r": 5000}}, 422),
    ({**TINY, "model": "llama-2-7bb"}, 404),
], ids=["zero-steps", "rank-too-big", "unknown-model"])
def test_bad_jobs_are_refused_before_queueing(client, body, status):
    before = len(client.get("/api/v1/profile").json())
    assert client.post("/api/v1/profile", json=body).status_code == status
    assert len(client.get("/api/v1/profile").json()) == before


def test_unknown_job_is_404(client):
    assert client.get("/api/v1/profile/nope").status_code == 404


# ---- the worker ------------------------------------------------------------------------------------

def _settings(tmp_path, **kw) -> Settings:
    base = dict(data_dir=tmp_path, run_worker=False, job_timeout_s=300, job_memory_limit_bytes=8 * GIB,
                worker_poll_s=0.1, job_heartbeat_timeout_s=5)
    return Settings(**{**base, **kw})


def _queue(db, **changes):
    return create_job(db, ProfileIn.model_validate({**TINY, **changes})).id


def test_failing_jobs_do_not_stop_the_next_one(tmp_path):
    settings = _settings(tmp_path)
    db = Database(settings.sqlalchemy_url)
    bad_config = _queue(db, model={"config": {**TINY_CONFIGS["llama-gqa"], "hidden_act": "no_such_act"}})
    out_of_memory = _queue(db)
    too_slow = _queue(db)
    good = _queue(db)
    assert Worker(db, settings).run_once() == bad_config
    assert Worker(db, _settings(tmp_path, job_memory_limit_bytes=64 * 2**20)).run_once() == out_of_memory
    assert Worker(db, _settings(tmp_path, job_timeout_s=0.5)).run_once() == too_slow
    assert Worker(db, settings).run_once() == good
    jobs = {j: db.get_job(j) for j in (bad_config, out_of_memory, too_slow, good)}
    assert jobs[bad_config].status == "failed" and "no_such_act" in jobs[bad_config].error
    assert jobs[out_of_memory].status == "failed" and jobs[out_of_memory].error.startswith("memory guard:")
    assert jobs[too_slow].status == "failed" and "timed out" in jobs[too_slow].error
    done = jobs[good]
    assert done.status == "done" and done.error is None
    assert done.progress == {"phase": "optimizer_step", "step": 2, "steps": 2}
    result = done.result
    assert result["prediction"]["estimator_version"] and result["environment"]["torch"]
    assert result["measured"]["peak_allocated_bytes"] > 0
    # a finished job is a measurement for the reports too
    stored = {m.key: m.result for m in db.measurements()}
    assert stored[f"job:{good}"]["measured"] == result["measured"]


def test_a_restart_runs_queued_jobs_and_fails_the_one_that_was_running(tmp_path):
    settings = _settings(tmp_path)
    before = Database(settings.sqlalchemy_url)
    orphan = _queue(before)
    queued = _queue(before)
    assert before.claim_next("a-worker-that-dies").id == orphan
    before._update(orphan, heartbeat_at=now() - timedelta(seconds=60))  # it died a minute ago
    before.engine.dispose()

    after = Database(settings.sqlalchemy_url)  # the service starts again
    worker = Worker(after, settings)
    assert worker.recover() == 1
    assert after.get_job(orphan).status == "failed"
    assert "worker stopped while this job was running" in after.get_job(orphan).error
    assert worker.run_once() == queued
    assert after.get_job(queued).status == "done"


def test_a_graceful_stop_puts_the_running_job_back_in_the_queue(tmp_path):
    settings = _settings(tmp_path)
    db = Database(settings.sqlalchemy_url)
    job = _queue(db)
    worker = Worker(db, settings)
    thread = worker.start()
    deadline = time.monotonic() + 60
    while db.get_job(job).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert db.get_job(job).status == "queued"


def test_a_job_the_worker_cannot_even_read_fails_and_the_worker_goes_on(tmp_path):
    settings = _settings(tmp_path)
    db = Database(settings.sqlalchemy_url)
    broken = db.create_job("{not json", "broken row", 1).id
    worker = Worker(db, settings)
    assert worker.run_once() == broken
    job = db.get_job(broken)
    assert job.status == "failed" and job.error.startswith("the worker could not run it")
    assert worker.run_once() is None  # nothing else queued; the worker is still usable
