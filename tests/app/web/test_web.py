"""The planning form, server-rendered (what a browser with JavaScript off gets)."""

import re
import sqlite3
from html import escape, unescape
from urllib.parse import urlencode

import pytest

from tunefit.estimator import EstimateRequest, estimate
from tunefit.estimator.advice import COMMON_GPUS
from tunefit.estimator.recipes import DEFAULT_RECIPE
from tunefit.estimator.request import default_checkpointing, request_from_fields
from tunefit.estimator.units import GIB

QLORA_7B = {"submitted": "1", "model": "llama-2-7b", "method": "qlora", "r": "16", "all_linear": "on",
            "double_quant": "on", "batch_size": "1", "seq_len": "512", "gpu": "rtx-4090"}


def _qlora_7b_request(recipe: str = DEFAULT_RECIPE, **fields) -> EstimateRequest:
    """QLORA_7B's request, under the recipe the form picks (the default one unless told)."""
    return request_from_fields({"model": "llama-2-7b", "recipe": recipe, "method": "qlora",
                                "lora": {"r": 16, "target_modules": "all-linear"}, "gpu": "rtx-4090", **fields})


def test_form_without_submission_shows_no_result(client):
    html = client.get("/").text
    assert 'id="plan-form"' in html and 'id="result"' not in html
    assert 'value="llama-2-7b"' in html  # the catalog datalist
    assert 'name="targets" value="gate_proj"' in html  # checkboxes per module of the architecture


def test_submitted_form_renders_the_result(client):
    html = client.get("/?" + urlencode(QLORA_7B)).text
    expected = estimate(_qlora_7b_request())
    assert f"{expected.peak_bytes / GIB:,.2f} GiB" in html  # the same number as the estimator
    assert f"recipe {DEFAULT_RECIPE}:" in html  # the page says which recipe it assumed
    for table in ("breakdown", "gpu-table", "compare-table"):
        assert f'id="{table}"' in html
    assert html.count("<svg") == 3 and 'class="segment"' in html
    assert escape(expected.paper.formula) in html  # the paper's formula and figure beside ours
    assert f"{expected.paper.bytes / GIB:,.2f} GiB" in html
    assert re.search(r'<tr class="chosen"><td>NVIDIA GeForce RTX 4090', html)
    assert " GB" not in html


def test_the_url_is_the_plan(client):
    url = "/?" + urlencode(QLORA_7B)
    first, second = client.get(url).text, client.get(url).text
    peak = re.search(r'id="peak">([^<]+)<', first).group(1)
    assert re.search(r'id="peak">([^<]+)<', second).group(1) == peak
    assert 'name="all_linear" checked' in first or 'id="all_linear" name="all_linear" checked' in first


def test_plans_are_kept_in_the_sqlite_file(client, settings):
    client.get("/?" + urlencode({**QLORA_7B, "seq_len": "777"}))
    rows = sqlite3.connect(settings.data_dir / "tunefit.db").execute("select query, label from plans").fetchall()
    assert any("seq_len=777" in q and "llama-2-7b qlora r=16" in label for q, label in rows)
    assert "seq 777" in client.get("/").text  # listed under recent plans


def test_the_form_estimates_an_evaluation_forward(client):
    html = client.get("/?" + urlencode({**QLORA_7B, "method": "inference", "inference_mode": "forward"})).text
    expected = estimate(EstimateRequest("llama-2-7b", method="inference", inference_mode="forward"))
    assert f'id="peak">{expected.peak_bytes / GIB:,.2f} GiB<' in html
    assert re.search(r'<select id="inference_mode" name="inference_mode">.*?<option value="forward" selected', html)
    html = client.get("/?" + urlencode({**QLORA_7B, "method": "inference", "new_tokens": "300"})).text
    expected = estimate(EstimateRequest("llama-2-7b", method="inference", new_tokens=300))
    assert f'id="peak">{expected.peak_bytes / GIB:,.2f} GiB<' in html
    assert 'name="new_tokens" type="number" min="0" value="300"' in html


@pytest.mark.parametrize("changes,request_fields", [
    ({}, {}),  # the default recipe's
    ({"recipe": "none"}, {}),  # the libraries' defaults: checkpointing on for prepared QLoRA
    ({"gradient_checkpointing": "off", "loop": "trainer", "grad_accum": "4", "prepare_kbit": "off", "attn": "eager",
      "autocast": "bf16", "loss": "chunked", "objective": "dpo", "adapter_dtype": "bf16"},
     {"gradient_checkpointing": False, "loop": "trainer", "grad_accum": 4, "prepare_kbit": False,
      "attn_implementation": "eager", "autocast": "bf16", "loss": "chunked", "objective": "dpo",
      "adapter_dtype": "bf16"}),
    ({"loop": "plain", "loss": "chunked"}, {"loop": "plain", "loss": "chunked"}),
], ids=["default-recipe", "library-defaults", "every-recipe-control", "plain-loop"])
def test_the_recipe_controls_reach_the_estimate(client, changes, request_fields):
    html = client.get("/?" + urlencode({**QLORA_7B, **changes})).text
    expected = estimate(_qlora_7b_request(changes.get("recipe", DEFAULT_RECIPE), **request_fields))
    assert f'id="peak">{expected.peak_bytes / GIB:,.2f} GiB<' in html
    assert expected.request.gradient_checkpointing is request_fields.get("gradient_checkpointing", True)
    for name, value in changes.items():  # the form shows what was chosen
        assert re.search(rf'<select id="{name}" name="{name}"[^>]*>.*?<option value="{value}" selected', html) or \
            f'id="{name}" name="{name}" type="number" min="1" value="{value}"' in html, name
    state = "on" if expected.request.gradient_checkpointing else "off"
    default = "on" if default_checkpointing("qlora", expected.request.prepare_kbit) else "off"
    assert f"gradient checkpointing {state} (non-reentrant); the default here is {default}" in html  # assumptions


@pytest.mark.parametrize("changes,message", [
    ({"r": "5000"}, "lora.r"),
    ({"model": "llama-2-7bb"}, "did you mean llama-2-7b"),
    ({"batch_size": "zero"}, "batch_size"),
    ({"config": "{not json"}, "config"),
    ({"all_linear": "", "targets": "c_attn"}, "lora.target_modules"),
], ids=["rank-too-big", "unknown-model", "batch-not-a-number", "config-not-json", "unknown-module"])
def test_bad_input_is_shown_on_the_page(client, changes, message):
    query = {**QLORA_7B, **changes}
    if changes.get("all_linear") == "":
        del query["all_linear"]
    r = client.get("/?" + urlencode(query))
    assert r.status_code == 200
    assert 'id="errors"' in r.text and message in r.text
    assert 'id="result"' not in r.text


def test_pasted_config_replaces_the_catalog_model(client):
    import json

    from tests.estimator.tiny_configs import TINY_CONFIGS

    query = {**QLORA_7B, "config": json.dumps(TINY_CONFIGS["phi3"]), "method": "lora", "device": "cpu"}
    query.pop("gpu")
    html = client.get("/?" + urlencode(query)).text
    assert 'id="result"' in html
    assert 'value="qkv_proj"' in html  # the pasted architecture's modules


def test_measure_it_queues_a_job_and_its_page_shows_the_result(client, settings):
    import json

    from tests.estimator.tiny_configs import TINY_CONFIGS
    from tunefit.app.jobs.worker import Worker

    plan = urlencode({"submitted": "1", "config": json.dumps(TINY_CONFIGS["qwen2"]), "method": "lora", "r": "4",
                      "device": "cpu", "batch_size": "1", "seq_len": "8"})
    page = client.get("/?" + plan).text
    assert 'id="measure-form"' in page and escape(plan, quote=True) in page
    r = client.post("/jobs", content=urlencode({"plan": plan, "steps": "2"}),
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code == 303
    job_url = r.headers["location"]
    waiting = client.get(job_url).text
    assert 'http-equiv="refresh"' in waiting and "waiting for a worker" in waiting

    assert Worker(client.app.state.db, settings.model_copy(update={"job_timeout_s": 300})).run_once()
    done = client.get(job_url).text
    assert 'http-equiv="refresh"' not in done and 'id="measured-table"' in done
    assert "optimizer_step" in done and "torch" in done
    assert job_url.removeprefix("/jobs/") in client.get("/jobs").text


def test_measure_it_with_a_broken_plan_is_refused(client):
    r = client.post("/jobs", content=urlencode({"plan": "submitted=1&model=nope", "steps": "2"}),
                    headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code in (404, 422)


@pytest.mark.parametrize("model,default,other", [("phi-4", "qkv_proj", "o_proj"), ("gpt2", "c_attn", "c_proj"),
                                                  ("llama-2-7b", "q_proj", "k_proj")],
                         ids=["phi3-no-peft-default", "gpt2-peft-default", "llama-peft-default"])
def test_the_form_checks_the_models_default_targets(client, model, default, other):
    html = client.get("/?" + urlencode({"model": model})).text
    assert f'name="targets" value="{default}" checked' in html
    assert f'name="targets" value="{other}" >' in html  # the others unchecked
    assert re.search(r'id="default-targets">[^<]*' + default, html)


@pytest.mark.parametrize("model,targets", [("phi-4", "qkv_proj"), ("gpt2", "c_attn")],
                         ids=["phi3-no-peft-default", "gpt2-peft-default"])
def test_nothing_checked_is_the_models_default(client, model, targets):
    html = client.get("/?" + urlencode({"submitted": "1", "model": model, "method": "lora", "gpu": "rtx-4090"})).text
    assert 'id="result"' in html and 'id="errors"' not in html
    assert re.search(r'id="targets-used">[^<]*<strong>' + targets + "</strong>", html)  # the result names them
    assert "name target_modules to choose" in unescape(html)  # and the assumptions say whose default


def test_paper_figures_page(client):
    html = client.get("/paper?model=llama-2-7b&r=8&targets=q_proj,v_proj").text
    # LoRA, arXiv:2106.09685, Eq. 10 for Llama-2-7B, q and v at r=8: 32 * 2 * 8 * (4096 + 4096) trainable
    assert "4,194,304" in html and "6,738,415,616" in html
    assert 'id="param-bars"' in html and 'id="loss-curves"' in html
    assert client.get("/paper?model=llama-2-7bb").status_code == 404


def test_paper_page_defaults_to_the_models_targets(client):
    html = client.get("/paper?model=gpt2&r=8").text  # no targets: gpt2's default, c_attn
    assert 'id="default-targets">c_attn<' in html and 'id="param-bars"' in html
    assert "4,194,304" in client.get("/paper?model=llama-2-7b&r=8").text  # q and v: the paper's Eq. 10
    assert client.get("/paper?r=zero").status_code == 422


def test_the_small_experiment_learns_with_both_methods():
    pytest.importorskip("torch", reason="needs the [profiler] extra")
    from tunefit.profiler.toy import lora_toy_curves

    curves = lora_toy_curves(r=4, steps=150)
    assert curves["trainable"]["lora"] == 4 * (64 + 64) < curves["trainable"]["full"]
    for name in ("full", "lora"):
        assert curves[name][-1] < 0.5 * curves[name][0]  # both learn
    assert curves["full"][-1] <= curves["lora"][-1] * 1.5  # full fine-tuning is at least as good, roughly


def test_the_verdict_comes_before_the_form_and_its_suggestions_lead_to_plans_that_fit(client):
    plan = {**QLORA_7B, "recipe": "none", "model": "llama-3-8b", "batch_size": "4", "seq_len": "2048"}
    html = client.get("/?" + urlencode(plan)).text
    assert html.index('id="verdict"') < html.index('id="plan-form"')
    sentence = re.search(r'<p class="sentence">(.*?)</p>', html).group(1)
    assert sentence.startswith("Does not fit an NVIDIA GeForce RTX 4090") and "short" in sentence
    links = re.findall(r'<ol class="suggestions">.*?</ol>', html, re.S)[0]
    hrefs = [unescape(h) for h in re.findall(r'href="([^"]+)"', links)]
    assert hrefs
    for href in hrefs:
        followed = client.get(href).text
        assert re.search(r'<p class="sentence">Fits an NVIDIA GeForce RTX 4090', followed), href


def test_without_a_gpu_the_verdict_is_for_the_common_ones(client):
    html = client.get("/?" + urlencode({k: v for k, v in QLORA_7B.items() if k != "gpu"})).text
    assert [f"verdict-{g}" in html for g in COMMON_GPUS] == [True] * len(COMMON_GPUS)


def test_the_page_says_before_the_click_when_no_worker_can_take_a_job(client, monkeypatch):
    """This module's service runs no worker (run_worker=False): the result page and a queued job's
    page say so and how to start one; without torch (the base install) they name the extra."""
    from tunefit import profiler

    page = client.get("/?" + urlencode(QLORA_7B)).text
    assert 'id="no-worker"' in page and "TUNEFIT_RUN_WORKER=false" in page and "tunefit worker" in page
    plan = urlencode({**QLORA_7B, "recipe": "none", "device": "cpu", "batch_size": "1", "seq_len": "8"})
    created = client.post("/jobs", content=urlencode({"plan": plan, "steps": "1"}),
                          headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert created.status_code == 303, created.text
    assert "It waits because no worker can take it" in client.get(created.headers["location"]).text
    monkeypatch.setattr(profiler, "available", lambda: False)
    assert "pip install -e &#39;.[profiler]&#39;" in client.get("/?" + urlencode(QLORA_7B)).text


def test_wrong_input_stays_as_typed_with_every_error_beside_its_field(client):
    html = client.get("/?" + urlencode({**QLORA_7B, "batch_size": "zero", "seq_len": "-3", "model": "llama-2-7b"})).text
    assert 'id="batch_size" name="batch_size" type="number" min="1" value="zero"' in html
    assert 'id="seq_len" name="seq_len" type="number" min="1" value="-3"' in html
    assert 'id="error-batch_size"' in html and 'id="error-seq_len"' in html  # both at once
    unknown = client.get("/?" + urlencode({**QLORA_7B, "model": "llama-2-7bb"})).text
    assert 'value="llama-2-7bb"' in unknown and 'id="error-model"' in unknown and "did you mean" in unknown
