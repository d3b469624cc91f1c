"""Hugging Face ids on every surface: the REST API, the CLI and the form answer with the commit
named, or with an error a user can act on; a profiling job measures the commit the page showed."""

import json

import pytest

from tests.app.hub.conftest import HUB_TIMEOUT_S
from tunefit.app.cli import main
from tunefit.app.hub import resolver as hub
from tunefit.app.hub.resolver import HubResolver
from tunefit.app.hub.store import FolderStore
from tunefit.estimator import estimate, get_model
from tunefit.estimator.document import request_from_document

HERMES = "NousResearch/Hermes-3-Llama-3.1-8B"
BNB = "unsloth/Qwen2.5-0.5B-bnb-4bit"


def test_the_api_answers_a_fine_tune_naming_its_commit(hub_client, fake_hub):
    r = hub_client.post("/api/v1/estimate", json={"model": HERMES, "method": "qlora", "gpus": ["rtx-4090"]})
    assert r.status_code == 200, r.text
    doc = r.json()
    source = doc["model_source"]
    assert source["id"] == HERMES and source["sha"] == fake_hub.repos[HERMES].sha and source["revision"] == "main"
    # the checkpoint's headers hold what the estimate counts
    assert source["checkpoint"]["params"] == doc["params"]["total"] == source["estimated_params"]
    assert source["params_note"] is None
    # the same config as the catalog's Llama 3.1 8B: the same answer
    catalog = hub_client.post("/api/v1/estimate", json={"model": "llama-3.1-8b", "method": "qlora",
                                                        "gpus": ["rtx-4090"]}).json()
    assert doc["peak_bytes"] == catalog["peak_bytes"] and doc["verdicts"][0]["fits"] == catalog["verdicts"][0]["fits"]
    assert doc["request"]["model"]["source"]["reference"] == f"{HERMES}@{source['sha']}"


def test_a_document_read_back_answers_the_same(hub_client):
    """A stored document is estimated again without the Hub (its request holds the config), and its
    model, sent back to the API, names the same commit."""
    doc = hub_client.post("/api/v1/estimate", json={"model": HERMES, "method": "lora"}).json()
    assert estimate(request_from_document(doc["request"])).peak_bytes == doc["peak_bytes"]
    again = hub_client.post("/api/v1/estimate", json={"model": doc["request"]["model"], "method": "lora"})
    assert again.status_code == 200, again.text
    assert again.json()["peak_bytes"] == doc["peak_bytes"]
    assert again.json()["model_source"]["sha"] == doc["model_source"]["sha"]


@pytest.mark.parametrize("path, body", [
    ("/api/v1/capacity", {"gpus": ["rtx-4090", "a100-80gb"]}),
    ("/api/v1/compare", {}),
], ids=["capacity", "compare"])
def test_capacity_and_compare_take_hub_ids(hub_client, path, body):
    by_hub = hub_client.post(path, json={"model": HERMES, "method": "qlora", **body})
    by_catalog = hub_client.post(path, json={"model": "llama-3.1-8b", "method": "qlora", **body})
    assert by_hub.status_code == 200, by_hub.text
    rows = "rows" if path.endswith("capacity") else "results"
    strip = (lambda r: {k: v for k, v in r.items() if k != "document"}) if rows == "results" else (lambda r: r)
    assert [strip(r) for r in by_hub.json()[rows]] == [strip(r) for r in by_catalog.json()[rows]]


def test_a_pre_quantized_checkpoint_is_qlora_as_stored(hub_client):
    doc = hub_client.post("/api/v1/estimate", json={"model": BNB, "method": "lora"}).json()
    assert doc["request"]["method"] == "qlora"
    assert doc["request"]["quant"] == {"type": "nf4", "double_quant": True, "blocksize": 64}
    assert any("stored in bitsandbytes nf4" in a for a in doc["assumptions"])
    unquantized = hub_client.post("/api/v1/estimate", json={"model": "qwen2.5-0.5b", "method": "qlora"}).json()
    assert doc["peak_bytes"] == unquantized["peak_bytes"]
    full = hub_client.post("/api/v1/estimate", json={"model": BNB, "method": "full"})
    assert full.status_code == 422 and "purely quantized" in full.text


@pytest.mark.parametrize("model, catalog, words", [
    ("google/gemma-3-4b-it", "gemma-3-4b", None),
    ("Qwen/Qwen2.5-0.5B-FP8", "qwen2.5-0.5b", "FP8 checkpoint is dequantized"),
], ids=["multimodal-wrapper", "fp8"])
def test_wrappers_and_stored_formats_answer_as_transformers_loads_them(hub_client, model, catalog, words):
    doc = hub_client.post("/api/v1/estimate", json={"model": model, "method": "lora"}).json()
    assert doc["params"]["total"] == get_model(catalog).arch.total_params
    assert doc["peak_bytes"] == hub_client.post("/api/v1/estimate", json={"model": catalog, "method": "lora"}
                                                ).json()["peak_bytes"]
    assert words is None or any(words in a for a in doc["assumptions"])


@pytest.mark.parametrize("model, status, words", [
    ("meta-llama/Llama-3.1-8B-Instruct", 403, "HF_TOKEN"),
    ("nope/Hermes-3-Llama-3.1-8", 404, HERMES),
    ("slow/Llama-3.1-8B-Slow", 424, "did not answer"),
    ("broken/garbage-config", 422, "not JSON"),
    ("google-bert/bert-base-uncased", 422, "not a causal LM"),
    ("stabilityai/stable-diffusion-xl-base-1.0", 422, "diffusers"),
    ("Qwen/Qwen--bad", 422, "neither a catalog id nor a Hugging Face id"),
], ids=["gated", "missing", "slow", "garbage-json", "encoder", "diffusers", "malformed"])
def test_api_errors_are_4xx_naming_the_id(hub_client, model, status, words):
    r = hub_client.post("/api/v1/estimate", json={"model": model})
    assert r.status_code == status, r.text
    assert words in r.text and model.partition("@")[0] in r.text


def test_a_revision_names_a_commit_and_is_refused_for_catalog_ids(hub_client, fake_hub):
    sha = fake_hub.repos[HERMES].sha
    pinned = hub_client.post("/api/v1/estimate", json={"model": HERMES, "revision": sha}).json()
    assert pinned["model_source"]["revision"] == sha
    missing = hub_client.post("/api/v1/estimate", json={"model": HERMES, "revision": "v9"})
    assert missing.status_code == 404 and "revision 'v9'" in missing.text
    catalog = hub_client.post("/api/v1/estimate", json={"model": "llama-3.1-8b", "revision": "main"})
    assert catalog.status_code == 422 and "catalog id" in catalog.text


def test_a_profiling_job_is_pinned_to_the_commit(hub_client, fake_hub):
    r = hub_client.post("/api/v1/profile", json={"model": HERMES, "method": "qlora", "device": "meta",
                                                 "recipe": "none", "steps": 1})
    assert r.status_code in (200, 201, 202), r.text
    assert r.json()["request"]["model"] == f"{HERMES}@{fake_hub.repos[HERMES].sha}"


def test_the_form_answers_a_hub_id_with_its_commit(hub_client, fake_hub):
    page = hub_client.get("/", params={"model": HERMES, "method": "qlora", "submitted": "1"})
    assert page.status_code == 200
    assert 'id="model-source"' in page.text and fake_hub.repos[HERMES].sha[:12] in page.text
    # the LoRA target checkboxes list the Hub model's modules
    assert 'value="q_proj"' in page.text and 'value="down_proj"' in page.text


def test_the_form_shows_a_hub_error_beside_the_model(hub_client):
    page = hub_client.get("/", params={"model": "meta-llama/Llama-3.1-8B-Instruct", "submitted": "1"})
    assert page.status_code == 200
    assert 'id="error-model"' in page.text and "HF_TOKEN" in page.text


@pytest.fixture
def cli_hub(fake_hub, hub_settings, tmp_path):
    """The command line's resolver, on the fake hub and a cache folder of this test's own."""
    previous = hub.active()  # the application's (module-scoped) resolver, put back after
    hub.use(HubResolver(hub_settings.model_copy(update={"hub_timeout_s": HUB_TIMEOUT_S}), FolderStore(tmp_path)))
    yield
    hub.use(previous)


def test_the_cli_prints_the_commit_and_its_json_is_the_apis(cli_hub, hub_client, fake_hub, capsys):
    assert main(["estimate", "--model", HERMES, "--method", "qlora", "--gpu", "rtx-4090"]) == 0
    out = capsys.readouterr().out
    assert f"hub {HERMES} revision main = commit {fake_hub.repos[HERMES].sha}" in out
    assert out.index("Fits") < out.index("hub ")  # the verdict first
    assert main(["estimate", "--model", HERMES, "--method", "qlora", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    api = hub_client.post("/api/v1/estimate", json={"model": HERMES, "method": "qlora"}).json()
    assert doc["peak_bytes"] == api["peak_bytes"] and doc["model_source"]["sha"] == api["model_source"]["sha"]


def test_the_cli_exits_2_with_the_reason(cli_hub, capsys):
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B-Instruct"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err


def test_models_lists_hub_ids_in_aligned_columns(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    family = lines[0].index("family")
    longest = get_model("deepseek-r1-distill-llama-70b").hf_repo  # the id that ran into its family before
    row = next(line for line in lines if longest in line)
    assert row[family - 2: family] == "  " and row[family:].startswith("llama")


def test_models_search_asks_the_hub(cli_hub, capsys):
    assert main(["models", "--search", "Llama-3.1-8B"]) == 0
    out = capsys.readouterr().out
    assert "meta-llama/Llama-3.1-8B-Instruct" in out and f"{HERMES}  hub" in out


def test_the_models_endpoint_describes_a_hub_model(hub_client, fake_hub):
    r = hub_client.get(f"/api/v1/models/{HERMES}")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_type"] == "llama" and fake_hub.repos[HERMES].sha in doc["source"]
    assert doc["default_target_modules"] == ["q_proj", "v_proj"] and "down_proj" in doc["linear_modules"]
    assert doc["params"] == get_model("llama-3.1-8b").arch.total_params
    assert hub_client.get("/api/v1/models/nope/Hermes-3-Llama-3.1-8").status_code == 404
