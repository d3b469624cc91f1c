"""Limits a hostile client must not dodge: the job rate limit with a forged ``X-Forwarded-For``, a
token holder locked out by someone else's failed guesses, and the queue cap under concurrent
submissions."""

import os
import subprocess
import sys
import threading
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.app.processes import free_port, wait_for
from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.config import Settings
from tunefit.app.core.db import Database
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.jobs.service import QueueFull, create_job
from tunefit.app.main import create_app

TOKEN = "correct horse battery staple"
# A meta-device simulation of a tiny model: admitted at once, allocates nothing, queued (no worker).
JOB = {"model": {"config": TINY_CONFIGS["llama-gqa"]}, "method": "lora", "batch_size": 1, "seq_len": 8,
       "device": "meta", "target": "cpu", "steps": 1}
SERVER_START_TIMEOUT_S = 60  # a cold start imports fastapi and the catalogs; more on a loaded machine
BURST = 2


@contextmanager
def _serve(tmp_path, **env: str):
    """``tunefit serve`` as users start it (uvicorn's own header handling included), limit 1 job a
    minute in bursts of ``BURST``."""
    port = free_port()
    log = tmp_path / "server.log"
    settings = {"TUNEFIT_DATA_DIR": str(tmp_path), "TUNEFIT_RUN_WORKER": "false", "TUNEFIT_JOB_RATE_PER_MINUTE": "1",
                "TUNEFIT_JOB_RATE_BURST": str(BURST), **env}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tunefit.app.cli", "serve", "--port", str(port)],
                                env={**os.environ, **settings}, stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=SERVER_START_TIMEOUT_S) as client:
            wait_for(lambda: _answers(client), "the server to answer", timeout_s=SERVER_START_TIMEOUT_S, logs=log)
            yield client
    finally:
        proc.terminate()
        proc.wait(timeout=SERVER_START_TIMEOUT_S)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _forged(client: httpx.Client, n: int) -> list[int]:
    return [client.post("/api/v1/profile", json=JOB, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
            for i in range(1, n + 1)]


def test_a_forged_forwarded_header_does_not_dodge_the_job_rate_limit(tmp_path):
    with _serve(tmp_path) as client:
        assert [client.post("/api/v1/profile", json=JOB).status_code for _ in range(BURST + 1)] == [202] * BURST + [429]
        assert _forged(client, 6) == [429] * 6


def test_forwarded_headers_count_from_a_configured_proxy(tmp_path):
    """Behind a proxy the setting names, each forwarded client has its own allowance."""
    with _serve(tmp_path, TUNEFIT_FORWARDED_ALLOW_IPS="127.0.0.1") as client:
        assert _forged(client, 4) == [202] * 4


def test_failed_guesses_do_not_lock_out_the_token_holder(tmp_path):
    settings = Settings(data_dir=tmp_path, run_worker=False, api_token=TOKEN, job_rate_per_minute=1,
                        job_rate_burst=BURST)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        guesses = [client.post("/api/v1/profile", json=JOB, headers={"Authorization": "Bearer guess"}).status_code
                   for _ in range(5)]
        assert guesses == [401] * BURST + [429] * (5 - BURST)  # guessing is throttled ...
        holder = client.post("/api/v1/profile", json=JOB, headers={"Authorization": f"Bearer {TOKEN}"})
        assert holder.status_code == 202, holder.text  # ... on its own bucket


@pytest.mark.parametrize("cap,submitters", [(5, 40), (1, 16)], ids=["cap-5-of-40", "cap-1-of-16"])
def test_the_queue_cap_holds_under_concurrent_submissions(tmp_path, cap, submitters):
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    settings = Settings(data_dir=tmp_path, run_worker=False, max_queued_jobs=cap)
    body = ProfileIn.model_validate(JOB)
    start = threading.Barrier(submitters)
    outcomes: list[str] = []

    def submit() -> None:
        start.wait()
        try:
            create_job(db, body, settings=settings)
            outcomes.append("queued")
        except QueueFull:
            outcomes.append("full")

    threads = [threading.Thread(target=submit) for _ in range(submitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["full"] * (submitters - cap) + ["queued"] * cap
    assert len(db.list_jobs(submitters)) == cap
