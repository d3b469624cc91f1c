"""Where jobs run is chosen once (``app.jobs.executor``): every way of creating a job hands it to
that executor, and the workers endpoint asks it."""

import pytest

from tunefit.app.core.config import Settings
from tunefit.app.jobs.executor import CeleryExecutor, LocalExecutor, make_executor, redacted


class RecordingExecutor:
    """An executor (the ``Executor`` protocol) that records what it is handed."""

    name = "recording"

    def __init__(self):
        self.sent = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def dispatch(self, job, body) -> None:
        self.sent.append((job.id, body.model))

    def workers(self):
        return [{"name": "recorder", "executor": "local", "kind": None, "device_name": None, "memory_bytes": None,
                 "host": None, "versions": {}, "current_job": None}]


@pytest.fixture
def recording(client):
    executor, original = RecordingExecutor(), client.app.state.executor
    client.app.state.executor = executor
    yield executor
    client.app.state.executor = original


def test_the_api_and_the_form_hand_new_jobs_to_the_executor(client, recording):
    api = client.post("/api/v1/profile", json={"model": "llama-2-7b", "method": "qlora", "steps": 1})
    form = client.post("/jobs", data={"plan": "model=llama-2-7b&method=qlora&submitted=1", "steps": "1"},
                       follow_redirects=False)
    assert api.status_code == 202 and form.status_code == 303
    assert recording.sent == [(api.json()["id"], "llama-2-7b"), (form.headers["location"].rsplit("/", 1)[1],
                                                                   "llama-2-7b")]


def test_the_workers_endpoint_asks_the_executor(client, recording):
    # its name holds the host and process id: shown with the admin token only (test_hostile_jobs.py)
    assert [w["name"] for w in client.get("/api/v1/workers").json()] == ["local worker 1"]


def test_the_setting_picks_the_executor(tmp_path):
    from tunefit.app.core.db import Database

    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert isinstance(make_executor(db, Settings(data_dir=tmp_path)), LocalExecutor)
    celery = make_executor(db, Settings(data_dir=tmp_path, executor="celery", broker_url="redis://127.0.0.1:1/0"))
    assert isinstance(celery, CeleryExecutor)  # made without reaching the broker


def test_a_broker_url_is_logged_without_its_password():
    assert redacted("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
