"""Hostile input: absurd configs, wrong types, deep nesting, huge bodies, script in every field a
page shows. Each gets a clear 4xx in bounded time and memory; pages escape what users sent."""

import json
import time
import tracemalloc
from html import escape

import markupsafe
import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS

LLAMA = TINY_CONFIGS["llama-gqa"]
# Bounds for one hostile request: generous (a normal estimate takes milliseconds), there to catch
# a request that hangs, loops over a hostile dimension, or builds something that large.
MAX_SECONDS = 2.0
MAX_TRACED_BYTES = 64 * 2**20


def _config(**changes):
    return {**LLAMA, **changes}


def _without(key):
    return {k: v for k, v in LLAMA.items() if k != key}


# A model of about 10^15 parameters: every dimension within its own bound, the product not.
QUADRILLION = _config(hidden_size=2**16, intermediate_size=2**18, num_hidden_layers=4096, num_attention_heads=512,
                      num_key_value_heads=512, vocab_size=2**20)

HOSTILE_CONFIGS = {
    "1e15-params": (QUADRILLION, "config", "limit"),
    "negative-hidden": (_config(hidden_size=-64), "config.hidden_size", "between"),
    "zero-layers": (_config(num_hidden_layers=0), "config.num_hidden_layers", "between"),
    "float-hidden": (_config(hidden_size=64.5), "config.hidden_size", "integer"),
    "string-hidden": (_config(hidden_size="64"), "config.hidden_size", "integer"),
    "bool-heads": (_config(num_attention_heads=True), "config.num_attention_heads", "integer"),
    "huge-vocab": (_config(vocab_size=2**62), "config.vocab_size", "between"),
    "missing-hidden": (_without("hidden_size"), "config.hidden_size", "required"),
    "only-model-type": ({"model_type": "llama"}, "config", "required"),
    "no-model-type": (_without("model_type"), "config.model_type", ""),
    "unknown-model-type": (_config(model_type="evil"), "config.model_type", "unsupported model_type"),
    "model-type-not-a-string": (_config(model_type=["llama"]), "config.model_type", ""),
    "heads-not-dividing": (_config(num_attention_heads=3, num_key_value_heads=2), "config", ""),
}


def _bounded(call):
    """(response, seconds, traced peak bytes) of ``call()``."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = call()
        return response, time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("endpoint", ["estimate", "capacity", "compare", "profile"])
@pytest.mark.parametrize("name", list(HOSTILE_CONFIGS))
def test_hostile_configs_are_a_located_422_in_bounded_time_and_memory(client, endpoint, name):
    config, field, words = HOSTILE_CONFIGS[name]
    body = {"model": {"config": config}, "method": "lora", "device": "cpu"}
    r, seconds, traced = _bounded(lambda: client.post(f"/api/v1/{endpoint}", json=body))
    assert seconds < MAX_SECONDS and traced < MAX_TRACED_BYTES
    if endpoint == "compare":  # each column names its own error
        assert r.status_code == 200, r.text
        assert all(words in col["error"] and col["document"] is None for col in r.json()["results"])
        return
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert ".".join(detail["loc"][1:]).startswith(field) and words in detail["msg"]


def _nested(depth: int, opener: str, closer: str) -> bytes:
    return ('{"model": {"config": {"model_type": "llama", "x": ' + opener * depth + "1" + closer * depth
            + '}}}').encode()


@pytest.mark.parametrize("path", ["/api/v1/estimate", "/api/v1/capacity", "/api/v1/profile"])
@pytest.mark.parametrize("payload", [
    _nested(50_000, "[", "]"),
    _nested(20_000, '{"a":', "}"),
], ids=["arrays", "objects"])
def test_deeply_nested_json_is_a_clear_4xx(client, path, payload):
    assert len(payload) < client.app.state.settings.max_body_bytes  # the parser, not the size limit, refuses it
    r, seconds, traced = _bounded(lambda: client.post(path, content=payload,
                                                      headers={"content-type": "application/json"}))
    assert r.status_code in (400, 422), r.text
    assert "pars" in r.text or "JSON" in r.text  # says the body could not be read
    assert seconds < MAX_SECONDS and traced < MAX_TRACED_BYTES


@pytest.mark.parametrize("path", ["/api/v1/estimate", "/api/v1/profile", "/jobs"])
def test_a_50_mb_body_is_refused_before_it_is_read(client, path):
    payload = b'{"model": "' + b"a" * (50 * 2**20) + b'"}'
    started = time.perf_counter()
    r = client.post(path, content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert time.perf_counter() - started < MAX_SECONDS


def test_a_config_with_many_keys_is_read_in_bounded_time(client):
    config = {**LLAMA, **{f"extra_{i}": i for i in range(10_000)}}
    assert len(json.dumps(config)) < client.app.state.settings.max_body_bytes
    r, seconds, _ = _bounded(lambda: client.post("/api/v1/estimate", json={"model": {"config": config}}))
    assert r.status_code == 200 and seconds < MAX_SECONDS


# ---- pages escape what users sent -------------------------------------------------------------------

XSS = '"><script>alert("xss")</script><img src=x onerror=alert(1)>'


def _assert_escaped(page: str, shown: bool = True) -> None:
    """No markup from the payload in ``page``; with ``shown``, the payload is there as text."""
    assert "<script>alert" not in page and "<img src=x" not in page
    if shown:
        assert escape("<script>alert") in page or escape("<img src=x") in page


@pytest.mark.parametrize("params", [
    {"model": XSS},
    {"model": "", "config": json.dumps({**LLAMA, "architectures": [XSS], "_name_or_path": XSS})},
    {"model": "", "config": "</textarea>" + XSS},
    {"model": "llama-2-7b", "targets": XSS},
    {"model": "llama-2-7b", "method": XSS},
], ids=["model-name", "config-fields", "config-text", "target-module", "method"])
def test_the_planning_page_escapes_user_input(client, params):
    page = client.get("/", params={**params, "submitted": "1"}).text
    _assert_escaped(page, shown=params.get("method") != XSS)  # an unknown method is named by its choices

def test_job_pages_escape_labels_and_requests(tmp_path, client):
    from fastapi.testclient import TestClient

    from tunefit.app.core.config import Settings
    from tunefit.app.main import create_app

    checkpoint = tmp_path / "models" / XSS.replace("/", "")
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps(LLAMA))
    settings = Settings(data_dir=tmp_path / "data", run_worker=False, checkpoint_dirs=[tmp_path / "models"],
                        job_rate_per_minute=0)
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/v1/profile", json={"model": {"checkpoint": checkpoint.name}, "device": "cpu",
                                            "seq_len": 8, "lora": {"r": 2}})
        assert r.status_code == 202, r.text
        assert XSS.replace("/", "") in r.json()["label"]  # the JSON keeps it as sent
        for page in (f"/jobs/{r.json()['id']}", "/jobs"):
            _assert_escaped(c.get(page).text)


def test_report_pages_escape_measurement_fields(client):
    db = client.app.state.db
    shipped = db.measurements()[0].result
    db.add_measurements([("xss:1", "job", "", {**shipped, "case": XSS, "worker": XSS})])
    measurement = next(m for m in db.measurements() if m.key == "xss:1")
    for page in ("/reports", f"/reports/{measurement.id}"):
        r = client.get(page)
        assert r.status_code == 200, r.text
        _assert_escaped(r.text)


def test_templates_autoescape_html(client):
    env = client.app.state.templates.env
    assert env.from_string("{{ v }}").render(v=XSS) == str(markupsafe.escape(XSS))
    assert env.select_template(["index.html"]).environment.autoescape
