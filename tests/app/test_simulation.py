"""Simulation jobs (device meta) through the API, the form, the worker, the CLI and the reports."""

import json
from urllib.parse import urlencode

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.cli import main
from tunefit.app.jobs.fleet import queue_for, worker_queues
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.jobs.service import job_request
from tunefit.app.jobs.worker import Worker

pytest.importorskip("torch", reason="needs the [profiler] extra")

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
CONFIG = TINY_CONFIGS["qwen2"]
SETTING = {"model": {"config": CONFIG}, "method": "lora", "batch_size": 1, "seq_len": 8, "lora": {"r": 4}, "steps": 2}


@pytest.mark.parametrize("target,simulated", [("any", "cuda"), ("cuda", "cuda"), ("cpu", "cpu")])
def test_a_meta_job_simulates_the_target_device_type(target, simulated):
    body = ProfileIn.model_validate({**SETTING, "device": "meta", "target": target})
    request, is_simulation = job_request(body)
    assert is_simulation and request.device == simulated == body.simulated_device


def test_a_real_job_is_not_a_simulation():
    request, is_simulation = job_request(ProfileIn.model_validate({**SETTING, "device": "cpu"}))
    assert not is_simulation and request.device == "cpu"


def test_meta_needs_a_device_type_not_a_gpu_kind(client):
    r = client.post("/api/v1/profile", json={**SETTING, "device": "meta", "target": "cuda.h100-80gb-hbm3"})
    assert r.status_code == 422
    assert any("target" in d["msg"] for d in r.json()["detail"])


def test_every_fleet_worker_takes_simulations():
    assert queue_for("cuda", "meta") == queue_for("any", "meta") == "any.meta"
    assert "any.meta" in worker_queues("cuda.h100-80gb-hbm3", "cuda") and "any.meta" in worker_queues("cpu", "cpu")
    assert queue_for("any", "cuda") == "any.cuda" and queue_for("cuda.a100-sxm4-80gb", "cuda") == "cuda.a100-sxm4-80gb"


def test_simulate_it_from_the_form_then_see_three_columns(client, settings):
    plan = urlencode({"submitted": "1", "recipe": "none", "config": json.dumps(CONFIG), "method": "lora", "r": "4",
                      "device": "cpu", "batch_size": "1", "seq_len": "8"})
    page = client.get("/?" + plan).text
    assert 'id="simulate"' in page and 'id="three-columns"' in page and 'id="simulation-refusal"' not in page
    r = client.post("/jobs", content=urlencode({"plan": plan, "steps": "2", "device": "meta"}),
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303
    job_id = r.headers["location"].removeprefix("/jobs/")
    assert "simulated for cpu" in client.get(f"/api/v1/profile/{job_id}").json()["label"]

    assert Worker(client.app.state.db, settings.model_copy(update={"job_timeout_s": 300})).run_once() == job_id
    job = client.get(f"/api/v1/profile/{job_id}").json()
    assert job["status"] == "done", job["error"]
    assert job["result"]["environment"]["device"] == "meta" and job["result"]["environment"]["target"] == "cpu"
    job_page = client.get(f"/jobs/{job_id}").text
    assert "Predicted vs simulated" in job_page and "<h2>Simulation: " in job_page
    assert '<strong id="status">done</strong></p>' in job_page  # one status word, not "done — done"

    simulated_peak = job["result"]["measured"]["peak_allocated_bytes"]
    report = client.get("/api/v1/reports?device=meta").json()
    row = next(r for r in report["rows"] if r["case"] == job["label"])
    assert row["device_kind"] == "meta.cpu" and row["measured_bytes"] == simulated_peak
    assert report["accuracy_simulated"]["methods"]["all"]["ours"]["n"] == len(report["rows"])
    assert report["accuracy"]["methods"]["all"]["ours"]["n"] == 0  # simulations never count as measurements

    page = client.get("/?" + plan).text
    three = page[page.index('id="three-columns"'):page.index("</table>", page.index('id="three-columns"'))]
    assert "simulated (meta.cpu)" in three and f'href="/reports/{row["id"]}"' in three


def test_cli_simulate_prints_the_simulation(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    code = main(["simulate", "--config", str(config), "--method", "lora", "--r", "4", "--batch-size", "1",
                 "--seq-len", "8", "--target", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["environment"] == {**out["environment"], "device": "meta", "target": "cpu"}
    assert out["request"]["device"] == "cpu"
    assert out["measured"]["peak_allocated_bytes"] > out["measured"]["load"]["allocated_bytes"] > 0


def test_cli_simulate_refuses_what_it_cannot_simulate(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    code = main(["simulate", "--config", str(config), "--method", "lora", "--optimizer", "adamw_8bit"])
    assert code == 2 and "meta" in capsys.readouterr().err


def test_a_plan_the_meta_device_cannot_run_says_so_before_anyone_asks(client):
    """The default recipe (trl-sft) runs bf16 autocast and fused AdamW: the page says why it cannot
    be simulated instead of offering the button, and the API refuses the job instead of queueing
    one that would fail."""
    plan = {"submitted": "1", "config": json.dumps(CONFIG), "method": "lora", "r": "4", "device": "cpu",
            "batch_size": "1", "seq_len": "8"}
    page = client.get("/?" + urlencode(plan)).text
    assert 'id="simulate" disabled' in page and 'id="simulation-refusal"' in page and "optimizer" in page
    response = client.post("/api/v1/profile", json={"model": {"config": CONFIG}, "method": "lora", "lora": {"r": 4},
                                                    "batch_size": 1, "seq_len": 8, "device": "meta", "target": "cpu",
                                                    "recipe": "trl-sft"})
    assert response.status_code == 422 and "cannot be simulated" in response.text
    # named, the recipe is refused; left out, a simulation takes the libraries' defaults (as `tunefit simulate`)
    allowed = client.post("/api/v1/profile", json={"model": {"config": CONFIG}, "method": "lora", "lora": {"r": 4},
                                                   "batch_size": 1, "seq_len": 8, "device": "meta", "target": "cpu"})
    assert allowed.status_code == 202, allowed.text
    assert client.get(f"/api/v1/profile/{allowed.json()['id']}").json()["request"]["recipe"] == "none"
