"""Every input path answers or refuses with a 4xx, never a 5xx: schema-valid plans too large for a
64-bit byte count, and the form routes (which the OpenAPI fuzzer never visits) fed what the API
refuses: deep nesting, thousand-digit numbers, values past the API's bounds, ids past the database's.
"""

import pytest

from tunefit.estimator.estimate import MAX_PLAN_BYTES
from tunefit.estimator.request import MAX_BATCH, MAX_SEQ

# Schema-valid (each within its own bound), yet about 10^20 bytes: past what 64 bits count.
TOO_LARGE = {"model": "llama-2-7b", "method": "full", "batch_size": MAX_BATCH, "seq_len": MAX_SEQ}
DEEP = "[" * 2000 + "]" * 2000
DIGITS = "9" * 4400


@pytest.mark.parametrize("path,extra", [
    ("/api/v1/estimate", {}),
    ("/api/v1/capacity", {}),
    ("/api/v1/profile", {"device": "meta"}),
], ids=["estimate", "capacity", "profile"])
def test_a_plan_past_64_bit_byte_counts_is_refused_at_the_batch(client, path, extra):
    response = client.post(path, json={**TOO_LARGE, **extra})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "batch_size"]
    assert "2^63" in response.json()["detail"][0]["msg"]


def test_a_compare_column_past_64_bit_byte_counts_names_its_error(client):
    response = client.post("/api/v1/compare", json={**TOO_LARGE, "variants": [{"method": "full"}]})
    assert response.status_code == 200
    (column,) = response.json()["results"]
    assert column["document"] is None and "2^63" in column["error"]


def test_a_plan_near_the_bound_is_answered_in_64_bit_counts(client):
    """Eager attention's scores at 2^24 tokens in every layer (no checkpointing: the libraries'
    defaults, recipe none): about a fifth of 2^63 bytes, still answered."""
    body = {**TOO_LARGE, "recipe": "none", "batch_size": 1, "attn_implementation": "eager"}
    response = client.post("/api/v1/estimate", json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert MAX_PLAN_BYTES // 8 < doc["peak_bytes"] <= MAX_PLAN_BYTES
    assert all(0 <= v <= MAX_PLAN_BYTES for v in doc["breakdown"].values())


PAGE_INPUTS = {
    "too-large-plan": ({"model": "llama-2-70b", "method": "full", "batch_size": MAX_BATCH, "seq_len": MAX_SEQ},
                       "2^63"),
    "deep-config": ({"config": '{"a": ' + DEEP + "}"}, "recursion limit"),
    "thousand-digit-config": ({"config": '{"model_type": "llama", "hidden_size": ' + DIGITS + "}"}, "config"),
    "alpha-past-the-api-bound": ({"alpha": "1e7"}, "alpha"),
}


@pytest.mark.parametrize("params,shown", PAGE_INPUTS.values(), ids=PAGE_INPUTS.keys())
def test_the_plan_page_shows_the_error(client, params, shown):
    response = client.get("/", params={**params, "submitted": "1"})
    assert response.status_code == 200
    assert shown in response.text


JOB_FORMS = {
    "alpha-past-the-api-bound": "model=llama-2-7b&method=qlora&alpha=1e7&submitted=1",
    "deep-config": "config=" + '{"a": ' + DEEP + "}&submitted=1",
    "too-large-plan": f"model=llama-2-70b&method=full&batch_size={MAX_BATCH}&seq_len={MAX_SEQ}&submitted=1",
}


@pytest.mark.parametrize("plan", JOB_FORMS.values(), ids=JOB_FORMS.keys())
@pytest.mark.parametrize("steps", ["1", "999", DIGITS], ids=["steps-1", "steps-999", "steps-4400-digits"])
def test_a_job_form_past_the_api_bounds_is_a_422(client, plan, steps):
    response = client.post("/jobs", data={"plan": plan, "steps": steps}, follow_redirects=False)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("path", [
    "/reports/1180591620717411303424",
    "/reports/0",
    "/jobs/" + "a" * 33,
    "/api/v1/profile/" + "a" * 33,
], ids=["measurement-past-64-bits", "measurement-zero", "job-id-too-long", "api-job-id-too-long"])
def test_ids_past_what_the_database_stores_are_a_4xx(client, path):
    assert 400 <= client.get(path).status_code < 500
