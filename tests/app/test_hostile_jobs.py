"""Other people's jobs are not public: job lists show a browser the jobs it created (the admin token
shows all), and no public document carries a server path, hostname, process id or the platform."""

import json

import pytest
from fastapi.testclient import TestClient

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.core.config import Settings
from tunefit.app.main import create_app

ADMIN = "the admin's own token"
JOB = {"model": {"config": TINY_CONFIGS["llama-gqa"]}, "method": "lora", "batch_size": 1, "seq_len": 8,
       "device": "meta", "target": "cpu", "steps": 1}
WORKER = {"name": "tunefit-cpu-4242@build-host-7", "executor": "celery", "kind": "cpu", "device_name": "cpu",
          "memory_bytes": 2**34, "host": "build-host-7", "versions": {"torch": "2.13.0"}, "current_job": None}


class HostExecutor:
    """An executor whose worker reports its host and process id, as a fleet worker does."""

    name = "celery"

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def dispatch(self, job, body) -> None:
        pass

    def workers(self):
        return [dict(WORKER)]


@pytest.fixture
def app(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, run_worker=False, job_rate_per_minute=0, admin_token=ADMIN))
    app.state.executor = HostExecutor()
    return app


def _browser(app) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def test_job_lists_show_a_browser_its_own_jobs(app):
    with _browser(app) as author, _browser(app) as other:
        job = author.post("/api/v1/profile", json=JOB).json()
        plan = "recipe=none&model=llama-2-7b&method=qlora&submitted=1"  # a plan the meta device runs
        form = author.post("/jobs", data={"plan": plan, "device": "meta"}, follow_redirects=False)
        assert form.status_code == 303
        mine = [j["id"] for j in author.get("/api/v1/profile").json()]
        assert job["id"] in mine and len(mine) == 2
        assert other.get("/api/v1/profile").json() == []
        assert job["label"] not in other.get("/jobs").text and job["label"] in author.get("/jobs").text
        everyone = other.get("/api/v1/profile", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert {j["id"] for j in everyone} == set(mine)
        assert other.get(job["url"]).status_code == 200  # a shared link still works


def test_a_wrong_token_is_refused_not_taken_as_none(app):
    with _browser(app) as client:
        assert client.get("/api/v1/profile", headers={"Authorization": "Bearer guess"}).status_code == 401


def test_public_job_documents_carry_no_host_process_or_platform(app):
    db = app.state.db
    request = {**JOB, "model": {"checkpoint": "/srv/private/models/tiny"}}
    job = db.create_job(json.dumps(request), "tiny checkpoint", 1, owner="0" * 32)
    db.claim_next("tunefit-cpu-4242@build-host-7")
    db.finish_first(job.id, "done", result={"environment": {"device": "cpu", "platform": "Linux-6.1-build-host",
                                                            "torch": "2.13.0"}})
    with _browser(app) as client:
        public = client.get(f"/api/v1/profile/{job.id}").json()
        admin = client.get(f"/api/v1/profile/{job.id}", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        page = client.get(f"/jobs/{job.id}").text
    text = json.dumps(public)
    assert "/srv/private" not in text and "build-host" not in text and "4242" not in text
    assert public["request"]["model"] == {"checkpoint": "tiny"} and public["worker"] is None
    assert public["result"]["environment"] == {"device": "cpu", "torch": "2.13.0"}
    assert "/srv/private" not in page and "build-host" not in page
    assert admin["request"]["model"]["checkpoint"] == "/srv/private/models/tiny"
    assert admin["worker"] == "tunefit-cpu-4242@build-host-7"


def test_the_workers_list_names_hosts_for_the_admin_only(app):
    with _browser(app) as client:
        (public,) = client.get("/api/v1/workers").json()
        (admin,) = client.get("/api/v1/workers", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert "build-host" not in json.dumps(public) and "4242" not in json.dumps(public)
    assert (public["kind"], public["versions"], public["host"]) == ("cpu", {}, None)
    assert admin == WORKER


def test_a_measurement_page_shows_no_platform(app):
    with _browser(app) as client:
        measurement = app.state.db.measurements()[0]
        page = client.get(f"/reports/{measurement.id}").text
    platform = measurement.result["environment"].get("platform")
    assert platform and platform not in page
