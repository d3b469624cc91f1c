"""Faults, with real processes: a worker or the server killed with SIGKILL and started again, and
SQLite under concurrent writers (a lock held past the busy timeout, several processes at once)."""

import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.app.processes import children, free_port, wait_for
from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.db import Database
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.jobs.service import create_job

TINY = {"model": {"config": TINY_CONFIGS["llama-gqa"]}, "method": "lora", "device": "cpu", "batch_size": 1,
        "seq_len": 8, "lora": {"r": 4}, "steps": 1}
# Long enough (about 20 steps of a 4-layer model at 512 tokens) that the kill lands mid-job.
LONG = {**TINY, "model": {"config": {**TINY_CONFIGS["llama-gqa"], "hidden_size": 256, "intermediate_size": 688,
                                     "num_hidden_layers": 4}}, "seq_len": 512, "steps": 20}
HEARTBEAT_S = 3
DEADLINE_S = 120


def _env(data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TUNEFIT_DATA_DIR": str(data), "TUNEFIT_EXECUTOR": "local", "TUNEFIT_WORKER_POLL_S": "0.1",
            "TUNEFIT_JOB_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_S), "TUNEFIT_JOB_TIMEOUT_S": "300",
            "TUNEFIT_JOB_RATE_PER_MINUTE": "0", **extra}


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path):
    """``python -m tunefit.app.cli <args>`` in its own session; killed with its children at the end."""
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tunefit.app.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _queue(db: Database, body: dict) -> str:
    return create_job(db, ProfileIn.model_validate(body)).id


# ---- the worker ---------------------------------------------------------------------------------------

def test_a_worker_killed_mid_job_fails_that_job_and_the_next_worker_goes_on(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'tunefit.db'}")
    killed_job = _queue(db, LONG)
    next_job = _queue(db, TINY)
    log = tmp_path / "worker.log"
    with _process(["worker"], _env(tmp_path), log) as worker:
        wait_for(lambda: db.get_job(killed_job).progress, "the first job to report progress", timeout_s=DEADLINE_S,
                 logs=log)
        measuring = children(worker.pid)
        assert measuring, "the job runs in a child process"
        os.kill(worker.pid, signal.SIGKILL)  # the worker only: its child must notice on its own
        worker.wait(timeout=10)
        wait_for(lambda: not any(_alive(pid) for pid in measuring), "the orphaned measurement to stop", timeout_s=10)
    assert db.get_job(killed_job).status == "running"  # nobody has noticed yet
    assert db.get_job(next_job).status == "queued"

    with _process(["worker"], _env(tmp_path), log):
        wait_for(lambda: db.get_job(next_job).status == "done", "the next job to run", timeout_s=DEADLINE_S, logs=log)
        wait_for(lambda: db.get_job(killed_job).status == "failed", "the killed job to be marked failed",
                 timeout_s=DEADLINE_S, logs=log)
    killed = db.get_job(killed_job)
    assert "worker stopped while this job was running" in killed.error and killed.result is None
    assert db.get_job(next_job).result["measured"]["peak_allocated_bytes"] > 0


# ---- the server ---------------------------------------------------------------------------------------

@contextmanager
def _server(data: Path, port: int, run_worker: bool, cookies: dict[str, str] | None = None):
    log = data / "server.log"
    with _process(["serve", "--port", str(port)], _env(data, TUNEFIT_RUN_WORKER=str(run_worker).lower()), log) as proc:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, cookies=cookies) as client:
            wait_for(lambda: _answers(client), "the server to answer", timeout_s=DEADLINE_S, logs=log)
            yield client, proc, log


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


PLAN = {"model": "mistral-7b", "method": "qlora", "batch_size": "3", "seq_len": "1024", "submitted": "1"}


def test_a_killed_server_keeps_plans_queued_jobs_and_results(tmp_path):
    port = free_port()
    with _server(tmp_path, port, run_worker=False) as (client, server, _):
        assert client.get("/", params=PLAN).status_code == 200  # a plan, listed under recent plans
        browser = dict(client.cookies)  # the plan is this browser's
        job = client.post("/api/v1/profile", json=TINY).json()["id"]
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)

    with _server(tmp_path, port, run_worker=True) as (client, server, log):  # the queued job runs now
        done = wait_for(lambda: (j := client.get(f"/api/v1/profile/{job}").json())["status"] == "done" and j,
                        "the queued job to run after the restart", timeout_s=DEADLINE_S, logs=log)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=10)

    with _server(tmp_path, port, run_worker=False, cookies=browser) as (client, _, _):
        again = client.get(f"/api/v1/profile/{job}").json()
        assert again["status"] == "done" and again["result"] == done["result"]
        reported = client.get("/api/v1/reports", params={"source": "job"}).json()
        assert [r["case"] for r in reported["rows"]] == [done["label"]]
        assert "mistral-7b" in client.get("/").text  # the plan, in the recent list


# ---- SQLite under concurrent writers ---------------------------------------------------------------------

def test_a_write_waits_out_a_lock_held_past_the_busy_timeout(tmp_path, caplog):
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}", busy_timeout_s=0.1)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write
    released = threading.Timer(1.0, holder.execute, args=("COMMIT",))
    released.start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tunefit.db"):
        job = db.create_job('{"x": 1}', "written while locked", 1)
    released.join()
    holder.close()
    assert time.monotonic() - started >= 0.9
    assert db.get_job(job.id).label == "written while locked"
    assert any("database busy" in r.getMessage() for r in caplog.records)


def _writer_process(url: str, jobs: int, results) -> None:
    """One process of several on one SQLite file: queue ``jobs`` jobs, then claim and finish jobs
    until none is left, recording which it claimed."""
    db = Database(url)
    for i in range(jobs):
        db.create_job(f'{{"n": {i}}}', f"from {os.getpid()}", 1)
    claimed = []
    while (job := db.claim_next(f"worker-{os.getpid()}")) is not None:
        db.set_progress(job.id, {"phase": "forward", "step": 1, "steps": 1})
        db.heartbeat(job.id)
        assert db.finish_first(job.id, "done", {"by": os.getpid()})
        claimed.append(job.id)
    results.put(claimed)


def test_concurrent_writer_processes_lose_nothing_and_run_each_job_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Database(url)  # tables first
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    processes = [ctx.Process(target=_writer_process, args=(url, 40, results)) for _ in range(4)]
    for p in processes:
        p.start()
    claimed = [results.get(timeout=DEADLINE_S) for _ in processes]
    for p in processes:
        p.join(timeout=30)
        assert p.exitcode == 0
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == len(set(every)) == 160  # each job claimed by exactly one process
    db = Database(url)
    jobs = db.list_jobs(1000)
    assert len(jobs) == 160
    assert all(j.status == "done" and j.attempts == 1 and j.result["by"] > 0 for j in jobs)


@pytest.mark.parametrize("writers", [8])
def test_concurrent_writer_threads_with_their_own_connections(tmp_path, writers):
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    errors: list[BaseException] = []
    claimed: list[str] = []

    def run() -> None:
        db = Database(url)
        try:
            for _ in range(10):
                job = db.create_job("{}", "thread", 1)
                db.set_progress(job.id, {"phase": "load", "step": 0, "steps": 1})
            while (job := db.claim_next(threading.current_thread().name)) is not None:
                claimed.append(job.id)
                db.finish_first(job.id, "done", {"ok": True})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, name=f"w{i}") for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DEADLINE_S)
    assert not errors, errors
    assert len(claimed) == len(set(claimed)) == 10 * writers
    assert {j.status for j in Database(url).list_jobs(1000)} == {"done"}


def test_wal_mode_lets_a_reader_in_while_a_writer_holds_the_lock(tmp_path):
    path = tmp_path / "wal.db"
    db = Database(f"sqlite:///{path}", busy_timeout_s=0.1)
    job = db.create_job("{}", "before", 1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert db.get_job(job.id).label == "before"
        assert time.monotonic() - started < 0.5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
