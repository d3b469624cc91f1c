"""The families of 2025-26 on every surface: a catalog model of each (named by its short or its
Hugging Face id) answers the estimate, capacity and compare endpoints and the planning form, with
the estimator's own numbers."""

from urllib.parse import urlencode

import pytest

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.estimator import EstimateRequest, estimate, get_model
from tunefit.estimator.recipes import DEFAULT_RECIPE
from tunefit.estimator.request import request_from_fields
from tunefit.estimator.units import GIB

# one catalog model per new family; gpt-oss has no sdpa attention in transformers
MODELS = {
    "qwen3": ("Qwen/Qwen3-8B", "sdpa"),
    "qwen3_moe": ("qwen3-30b-a3b", "sdpa"),
    "gemma3": ("gemma-3-4b", "sdpa"),
    "gemma3_text": ("gemma-3-1b", "sdpa"),
    "mistral3": ("mistral-small-3.1-24b", "sdpa"),
    "gpt_oss": ("openai/gpt-oss-20b", "eager"),
    "glm4_moe": ("glm-4.5-air", "sdpa"),
    "deepseek_v3": ("deepseek-ai/DeepSeek-V3", "sdpa"),
    "olmo2": ("olmo-2-7b", "sdpa"),
    "olmo3": ("olmo-3-7b", "sdpa"),
    "smollm3": ("HuggingFaceTB/SmolLM3-3B", "sdpa"),
    "granite": ("granite-3.3-8b", "sdpa"),
    "llama4": ("meta-llama/Llama-4-Scout-17B-16E", "sdpa"),
}
CASES = [pytest.param(model, attn, id=family) for family, (model, attn) in MODELS.items()]


def _targets(model: str) -> str | tuple[str, ...]:
    """all-linear, but by name where peft fails on it (Llama 4's router returns a tuple)."""
    return get_model(model).arch.every_linear_target


def _body(model: str, attn: str) -> dict:
    targets = _targets(model)
    return {"model": model, "method": "qlora",
            "lora": {"r": 16, "target_modules": targets if isinstance(targets, str) else list(targets)},
            "batch_size": 1, "seq_len": 2048, "attn_implementation": attn}


def _default_recipe(body: dict) -> EstimateRequest:
    """The request the surfaces build from ``body``: it names no recipe, so the default one's."""
    return request_from_fields({**body, "recipe": DEFAULT_RECIPE})


def test_every_new_family_has_a_case():
    assert {get_model(model).arch.model_type for model, _ in MODELS.values()} == set(MODELS)


@pytest.mark.parametrize("model,attn", CASES)
def test_estimate_capacity_and_compare(client, model, attn):
    expected = estimate(_default_recipe(_body(model, attn)))
    doc = client.post("/api/v1/estimate", json=_body(model, attn)).json()
    assert doc["peak_bytes"] == expected.peak_bytes
    assert doc["params"]["total"] == get_model(model).arch.total_params
    rows = client.post("/api/v1/capacity", json={**_body(model, attn), "gpus": ["rtx-4090", "h100-sxm-80gb"]}).json()
    assert [r["gpu"] for r in rows["rows"]] == ["rtx-4090", "h100-sxm-80gb"]
    compared = client.post("/api/v1/compare", json={"model": model, "attn_implementation": attn}).json()
    assert [r["label"] for r in compared["results"]] == ["full", "lora r=16", "qlora r=16"]


@pytest.mark.parametrize("model,attn", CASES)
def test_the_form_plans_it(client, model, attn):
    targets = _targets(model)
    chosen = {"all_linear": "on"} if isinstance(targets, str) else {"targets": list(targets)}
    query = {"submitted": "1", "model": model, "method": "qlora", "r": "16", **chosen,
             "double_quant": "on", "batch_size": "1", "seq_len": "2048", "attn": attn}
    html = client.get("/?" + urlencode(query, doseq=True)).text
    expected = estimate(_default_recipe(_body(model, attn)))
    assert f"{expected.peak_bytes / GIB:,.2f} GiB" in html


def test_a_family_without_a_catalog_entry_is_planned_from_its_pasted_config(client):
    """Mistral 4 (no public config.json at hand): its config answers estimate and capacity."""
    config = TINY_CONFIGS["mistral4"]
    body = {"model": {"config": config}, "method": "lora", "lora": {"r": 8, "target_modules": "all-linear"},
            "batch_size": 2, "seq_len": 64}
    expected = estimate(_default_recipe(body))
    doc = client.post("/api/v1/estimate", json=body).json()
    assert doc["peak_bytes"] == expected.peak_bytes
    rows = client.post("/api/v1/capacity", json={**body, "gpus": ["rtx-4090"]}).json()["rows"]
    assert [r["gpu"] for r in rows] == ["rtx-4090"]
