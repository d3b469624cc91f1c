"""Profiling on a fleet: Celery workers fed through a real Redis broker (Debian's redis-server on
loopback), jobs through the REST API, results stored once, a worker killed mid-job.

The delivery rules (app/fleet.py): late acknowledgement; a killed worker's message comes back
after the visibility timeout and runs again (attempt 2); past ``job_max_attempts`` the job is
marked failed; duplicate deliveries of a finished job do nothing; whoever finishes first stores
the result.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.app.processes import descendants, free_port, wait_for
from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database, now
from tunefit.app.main import create_app

TINY = {"model": {"config": TINY_CONFIGS["llama-gqa"]}, "method": "lora", "device": "cpu", "dtype": "fp32",
        "seq_len": 16, "lora": {"r": 4}, "steps": 2}
ADMIN = "the operator's token"
VISIBILITY_S = 25  # longer than one tiny job here (10-15 s, most of it importing torch in the child)
HEARTBEAT_S = 4
DEADLINE_S = 150


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = shutil.which("redis-server")
    assert server, "redis-server is missing: `make test` installs Debian's redis-server"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _redis_answers(port), "redis-server to accept connections", timeout_s=20, poll_s=0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(redis_url, tmp_path_factory):
    """Two CPU workers (separate processes) and the settings they share with the service."""
    data = tmp_path_factory.mktemp("fleet")
    env = {**os.environ, "TUNEFIT_EXECUTOR": "celery", "TUNEFIT_BROKER_URL": redis_url,
           "TUNEFIT_DATA_DIR": str(data), "TUNEFIT_CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
           "TUNEFIT_CELERY_RESTORE_INTERVAL_S": "1", "TUNEFIT_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S),
           "TUNEFIT_JOB_BUSY_RETRY_S": "2", "TUNEFIT_JOB_TIMEOUT_S": "120", "TUNEFIT_RUN_WORKER": "false"}
    settings = Settings(executor="celery", broker_url=redis_url, data_dir=data, run_worker=False, job_rate_per_minute=0,
                        celery_visibility_timeout_s=VISIBILITY_S, workers_inspect_timeout_s=1.0, admin_token=ADMIN)
    workers = {}
    logs = []
    for i in range(2):
        log = open(data / f"worker{i}.log", "w")
        logs.append(log)
        argv = [sys.executable, "-m", "tunefit.app.cli", "worker", "--executor", "celery", "--cpu"]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        workers[proc.pid] = proc
    try:
        # the operator's view: worker names (host, process id) and versions need the admin token
        with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            wait_for(lambda: len(client.get("/api/v1/workers").json()) == 2, "both workers to answer", timeout_s=60,
                     poll_s=1)
            yield client, settings, workers
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for log in logs:
            log.close()


def _submit(client, **changes) -> str:
    r = client.post("/api/v1/profile", json={**TINY, **changes})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _finished(client, job_ids):
    jobs = [client.get(f"/api/v1/profile/{j}").json() for j in job_ids]
    return jobs if all(j["status"] in ("done", "failed") for j in jobs) else None


def _measurement_keys(settings: Settings) -> list[str]:
    return [m.key for m in Database(settings.sqlalchemy_url).measurements() if m.source == "job"]


def _worker_pid(name: str) -> int:
    """Worker names are ``tunefit-<kind>-<pid>@<host>``."""
    return int(name.split("@")[0].rsplit("-", 1)[1])


def test_workers_list_their_device(fleet):
    client, _, workers = fleet
    listed = client.get("/api/v1/workers").json()
    assert {_worker_pid(w["name"]) for w in listed} == set(workers)
    for w in listed:
        assert w["executor"] == "celery" and w["kind"] == "cpu" and w["memory_bytes"] > 2**30
        assert w["versions"]["celery"] and w["versions"]["torch"]


def test_a_batch_of_jobs_is_stored_once_each(fleet):
    client, settings, _ = fleet
    ids = [_submit(client, batch_size=b) for b in (1, 2, 3, 4)]
    jobs = wait_for(lambda: _finished(client, ids), "the batch to finish", timeout_s=DEADLINE_S, poll_s=1)
    assert [j["status"] for j in jobs] == ["done"] * 4, [j["error"] for j in jobs]
    assert all(j["attempts"] == 1 for j in jobs)
    assert all(j["result"]["measured"]["peak_allocated_bytes"] > 0 for j in jobs)
    assert [j["result"]["request"]["batch_size"] for j in jobs] == [1, 2, 3, 4]
    keys = _measurement_keys(settings)
    assert sorted(k for k in keys if k.removeprefix("job:") in ids) == sorted(f"job:{i}" for i in ids)
    db = Database(settings.sqlalchemy_url)
    assert len({db.get_job(i).worker for i in ids}) == 2, "both workers took jobs"
    assert {j["worker"] for j in jobs} == {db.get_job(i).worker for i in ids}
    assert f"Worker {jobs[0]['worker']}, attempt 1" in client.get(f"/jobs/{ids[0]}").text
    measured = {m.key: m.result for m in db.measurements()}
    assert {measured[f"job:{i}"]["device_kind"] for i in ids} == {"cpu"}


def test_a_worker_killed_mid_job_hands_it_to_another(fleet):
    """Documented: the unacknowledged message comes back after the visibility timeout and the job
    runs again on a live worker (attempt 2); its result is stored once; the killed worker's
    measurement process does not outlive it."""
    client, settings, workers = fleet
    job_id = _submit(client, method="full", batch_size=2)

    def owner():
        for w in client.get("/api/v1/workers").json():
            if w["current_job"] and w["current_job"]["id"] == job_id:
                return w
        return None

    victim = wait_for(owner, "a worker to start the job", timeout_s=60, poll_s=0.5)
    pid = _worker_pid(victim["name"])
    orphans = wait_for(lambda: descendants(pid), "the measurement process to start", timeout_s=30, poll_s=0.2)
    os.kill(pid, signal.SIGKILL)
    workers[pid].wait(timeout=10)
    assert client.get(f"/api/v1/profile/{job_id}").json()["status"] == "running"
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in orphans), "the killed worker's children to exit",
             timeout_s=15, poll_s=0.5)
    job = wait_for(lambda: (_finished(client, [job_id]) or [None])[0], "the job to run again",
                   timeout_s=VISIBILITY_S + DEADLINE_S, poll_s=1)
    assert job["status"] == "done", job["error"]
    assert job["attempts"] == 2
    assert _worker_pid(Database(settings.sqlalchemy_url).get_job(job_id).worker) != pid
    assert _measurement_keys(settings).count(f"job:{job_id}") == 1


# ---- delivery rules, on the database alone ---------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    return Database(f"sqlite:///{tmp_path / 'jobs.db'}")


def _job(db):
    return db.create_job("{}", "a job", 2)


def test_first_delivery_runs_and_a_duplicate_waits_then_does_nothing(db):
    job = _job(db)
    verdict, claimed = db.claim_delivered(job.id, "w1", stale_after_s=60, max_attempts=2)
    assert verdict == "run" and claimed.status == "running" and claimed.attempts == 1 and claimed.worker == "w1"
    assert db.claim_delivered(job.id, "w2", stale_after_s=60, max_attempts=2)[0] == "busy"
    assert db.finish_first(job.id, "done", {"peak": 1})
    assert db.claim_delivered(job.id, "w2", stale_after_s=60, max_attempts=2)[0] == "finished"


def test_whoever_finishes_first_is_stored(db):
    job = _job(db)
    db.claim_delivered(job.id, "w1", stale_after_s=60, max_attempts=2)
    assert db.finish_first(job.id, "done", {"by": "w1"})
    assert not db.finish_first(job.id, "failed", error="late duplicate")
    stored = db.get_job(job.id)
    assert stored.status == "done" and stored.result == {"by": "w1"} and stored.error is None


def test_a_finished_job_and_its_measurement_are_stored_together(db, monkeypatch):
    """One transaction: a job is never done without its measurement in the reports (a server killed
    between two commits lost it), nor does a late duplicate add one."""
    import tunefit.app.core.db as db_module

    job = _job(db)
    db.claim_delivered(job.id, "w1", stale_after_s=60, max_attempts=2)

    def fail(session, rows):
        raise RuntimeError("the process dies while storing the measurement")

    with monkeypatch.context() as patch:
        patch.setattr(db_module, "_insert_measurements", fail)
        with pytest.raises(RuntimeError):
            db.finish_first(job.id, "done", {"by": "w1"}, measurement=(f"job:{job.id}", "job", "", {"by": "w1"}))
    assert db.get_job(job.id).status == "running" and db.measurements() == []
    assert db.finish_first(job.id, "done", {"by": "w1"}, measurement=(f"job:{job.id}", "job", "", {"by": "w1"}))
    assert not db.finish_first(job.id, "done", {"by": "w2"}, measurement=(f"job:{job.id}-2", "job", "", {}))
    assert [m.key for m in db.measurements()] == [f"job:{job.id}"] and db.get_job(job.id).status == "done"


def _silence(db, job_id, seconds):
    db._update(job_id, heartbeat_at=now() - timedelta(seconds=seconds), started_at=now() - timedelta(seconds=seconds))


def test_a_silent_job_runs_again_until_its_attempts_are_used_up(db):
    job = _job(db)
    db.claim_delivered(job.id, "w1", stale_after_s=10, max_attempts=2)
    _silence(db, job.id, 30)
    verdict, again = db.claim_delivered(job.id, "w2", stale_after_s=10, max_attempts=2)
    assert verdict == "run" and again.attempts == 2 and again.worker == "w2"
    _silence(db, job.id, 30)
    verdict, _ = db.claim_delivered(job.id, "w3", stale_after_s=10, max_attempts=2)
    assert verdict == "lost"
    stored = db.get_job(job.id)
    assert stored.status == "failed" and "2 time(s)" in stored.error and stored.worker == "w2"


def test_unknown_job_delivery_is_dropped(db):
    assert db.claim_delivered("nope", "w1", stale_after_s=10, max_attempts=2) == ("missing", None)


def test_an_unreachable_broker_fails_the_job_with_503(tmp_path):
    settings = Settings(executor="celery", broker_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=tmp_path,
                        run_worker=False)
    with TestClient(create_app(settings)) as client:
        client.get("/")  # a browser has its client id (cookie) before it submits: its job list shows the job
        r = client.post("/api/v1/profile", json=TINY)
        assert r.status_code == 503 and "job queue" in r.json()["detail"]
        jobs = client.get("/api/v1/profile").json()
        assert len(jobs) == 1 and jobs[0]["status"] == "failed" and "job queue" in jobs[0]["error"]


def test_local_executor_lists_its_in_process_worker(tmp_path):
    settings = Settings(data_dir=tmp_path, run_worker=True, worker_poll_s=0.1)
    with TestClient(create_app(settings)) as client:
        listed = client.get("/api/v1/workers").json()
    assert len(listed) == 1 and listed[0]["executor"] == "local" and listed[0]["current_job"] is None
