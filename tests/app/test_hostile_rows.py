"""One stored row must not break the reports: a result no measurement writes (byte counts past 64
bits, a zero peak, missing keys, a request today's estimator refuses, JSON that does not parse) is
left out with a count, never a 500, on every report view and job view. And simulations, which
allocate nothing, are bounded all the same."""

import copy

import pytest
from fastapi.testclient import TestClient

from tunefit.app.core.config import Settings
from tunefit.app.core.db import Measurement
from tunefit.app.main import create_app
from tunefit.estimator.request import MAX_BATCH, MAX_SEQ

REPORT_VIEWS = ["/api/v1/reports", "/api/v1/reports?source=job", "/api/v1/reports?method=full", "/reports",
                "/reports?source=job", "/reports.csv", "/reports.json"]


def _hostile_results(good: dict) -> dict[str, dict]:
    def changed(path: tuple[str, ...], value) -> dict:
        result = copy.deepcopy(good)
        target = result
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return result

    return {
        "peak-past-64-bits": changed(("measured", "peak_allocated_bytes"), 2**70),
        "phase-past-64-bits": changed(("measured", "phase_peaks", "forward"), 2**70),
        "zero-peak": changed(("measured", "peak_allocated_bytes"), 0),
        "string-peak": changed(("measured", "peak_allocated_bytes"), "lots"),
        "no-measured": {k: v for k, v in good.items() if k != "measured"},
        "refused-request": {**good, "request": {**good["request"], "batch_size": MAX_BATCH, "seq_len": MAX_SEQ}},
        "request-not-an-object": changed(("request",), ["llama-2-7b"]),
    }


@pytest.fixture
def hostile(tmp_path):
    settings = Settings(data_dir=tmp_path, run_worker=False, job_rate_per_minute=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        db = client.app.state.db
        good = db.measurements()[0].result
        shipped = len(client.get("/api/v1/reports").json()["rows"])
        rows = [(f"hostile:{name}", "job", "", result) for name, result in _hostile_results(good).items()]
        db.add_measurements(rows)
        with db.sessions.begin() as session:  # a row whose JSON does not parse at all
            session.add(Measurement(key="hostile:not-json", source="job", split="", result_json="{not json"))
        db.measurements_added += 1  # as add_measurements counts: report caches look again
        ids = [m.id for m in db.measurements() if m.key.startswith("hostile:")]
        job = db.create_job('{"model": "llama-2-7b"}', "a job with an extreme result", 1)
        db.finish_first(job.id, "done", result=_hostile_results(good)["peak-past-64-bits"])
        yield client, ids, job.id, shipped


@pytest.mark.parametrize("path", REPORT_VIEWS)
def test_every_report_view_leaves_unreadable_rows_out(hostile, path):
    client, ids, _, shipped = hostile
    response = client.get(path)
    assert response.status_code == 200, response.text[:500]
    if path.startswith("/api/v1/reports") and path.endswith("reports"):
        document = response.json()
        assert len(document["rows"]) == shipped and document["skipped"] == len(ids)
    if path.startswith("/reports?") or path == "/reports":
        assert f"{len(ids)} stored measurements could not be read" in response.text


def test_an_unreadable_measurements_page_is_a_4xx(hostile):
    client, ids, _, _ = hostile
    assert all(client.get(f"/reports/{i}").status_code == 422 for i in ids)


@pytest.mark.parametrize("path", ["/api/v1/profile/{job}", "/api/v1/profile", "/jobs/{job}", "/jobs"])
def test_a_job_with_an_extreme_result_is_shown(hostile, path):
    client, _, job, _ = hostile
    assert client.get(path.format(job=job)).status_code == 200


def test_the_plan_page_skips_unreadable_evidence(hostile):
    client, _, _, _ = hostile
    assert client.get("/", params={"model": "llama-2-7b", "method": "qlora", "submitted": "1"}).status_code == 200


def test_a_simulation_past_the_bound_is_refused_with_the_estimate(tmp_path):
    settings = Settings(data_dir=tmp_path, run_worker=False, job_rate_per_minute=0, max_simulated_bytes=2**40)
    # the libraries' defaults (recipe none): a plan the meta device can run
    body = {"model": "llama-2-70b", "method": "full", "recipe": "none", "batch_size": 64, "seq_len": 32768,
            "device": "meta", "target": "cuda"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        refused = client.post("/api/v1/profile", json=body)
        assert refused.status_code == 422, refused.text
        assert "TUNEFIT_MAX_SIMULATED_BYTES" in refused.json()["detail"][0]["msg"]
        assert client.post("/api/v1/profile", json={**body, "batch_size": 1, "seq_len": 512}).status_code == 202
