"""REST API: every endpoint, its errors, and the same numbers as the CLI."""

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from tests.estimator.tiny_configs import TINY_CONFIGS
from tunefit.app.cli import main as cli_main
from tunefit.estimator import capacity, get_model, gpus, models
from tunefit.estimator.recipes import DEFAULT_RECIPE
from tunefit.estimator.request import request_from_fields

# ---- catalogs ------------------------------------------------------------------------------------


def test_models_list_the_catalog_with_params_and_modules(client):
    rows = client.get("/api/v1/models").json()
    assert [r["id"] for r in rows] == list(models())
    by_id = {r["id"]: r for r in rows}
    assert by_id["llama-2-7b"]["params"] == 6_738_415_616
    assert "gate_proj" in by_id["llama-2-7b"]["linear_modules"]


@pytest.mark.parametrize("model_id,targets", [("gpt2", ["c_attn"]), ("phi-4", ["qkv_proj"])],
                         ids=["gpt2-peft-default", "phi3-no-peft-default"])
def test_models_name_their_default_targets(client, model_id, targets):
    assert client.get(f"/api/v1/models/{model_id}").json()["default_target_modules"] == targets


    body = client.get("/api/v1/models/mistral-7b").json()
    assert body["config"]["num_key_value_heads"] == 8
    assert body["params"] == get_model("mistral-7b").arch.total_params


def test_unknown_model_is_404_with_suggestions(client):
    r = client.get("/api/v1/models/llama-2-7bb")
    assert r.status_code == 404
    assert "llama-2-7b" in r.json()["suggestions"]


def test_gpus_list_the_catalog_in_bytes(client):
    rows = client.get("/api/v1/gpus").json()
    assert [r["id"] for r in rows] == list(gpus())
    assert all(isinstance(r["usable_bytes"], int) and r["usable_bytes"] > 0 for r in rows)


# ---- estimate: the same document as the CLI --------------------------------------------------------

SAME_AS_CLI = {
    "qlora-all-linear": (
        {"model": "llama-2-7b", "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
         "batch_size": 1, "seq_len": 512},
        ["--model", "llama-2-7b", "--method", "qlora", "--r", "16", "--targets", "all-linear",
         "--batch-size", "1", "--seq-len", "512"],
    ),
    "lora-qv-gpu": (
        {"model": "llama-3-8b", "method": "lora", "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]},
         "batch_size": 4, "seq_len": 2048, "gpu": "rtx-4090"},
        ["--model", "llama-3-8b", "--method", "lora", "--r", "8", "--targets", "q_proj,v_proj",
         "--batch-size", "4", "--seq-len", "2048", "--gpu", "rtx-4090"],
    ),
    "full-gc-eager-8bit": (
        {"model": "qwen2.5-1.5b", "method": "full", "gradient_checkpointing": True, "attn_implementation": "eager",
         "optimizer": "adamw_8bit", "dtype": "fp16"},
        ["--model", "qwen2.5-1.5b", "--method", "full", "--gradient-checkpointing", "--attn", "eager",
         "--optimizer", "adamw_8bit", "--dtype", "fp16"],
    ),
    "qlora-no-dq-dora": (
        {"model": "mistral-7b", "method": "qlora", "quant": {"type": "nf4", "double_quant": False},
         "lora": {"r": 32, "alpha": 16, "variant": "dora", "target_modules": ["q_proj", "k_proj", "v_proj"]}},
        ["--model", "mistral-7b", "--method", "qlora", "--no-double-quant", "--r", "32", "--alpha", "16",
         "--variant", "dora", "--targets", "q_proj,k_proj,v_proj"],
    ),
    "inference-zero3": (
        {"model": "mixtral-8x7b", "method": "inference", "seq_len": 4096},
        ["--model", "mixtral-8x7b", "--method", "inference", "--seq-len", "4096"],
    ),
    "full-zero3-x8-cpu": (
        {"model": "llama-2-13b", "method": "full", "sharding": "zero3", "num_gpus": 8, "device": "cpu"},
        ["--model", "llama-2-13b", "--method", "full", "--sharding", "zero3", "--num-gpus", "8", "--device", "cpu"],
    ),
}


@pytest.mark.parametrize("body,argv", SAME_AS_CLI.values(), ids=SAME_AS_CLI.keys())
def test_api_and_cli_give_identical_documents(client, capsys, body, argv):
    r = client.post("/api/v1/estimate", json=body)
    assert r.status_code == 200, r.text
    assert cli_main(["estimate", *argv, "--json"]) == 0
    assert r.json() == json.loads(capsys.readouterr().out)


def test_config_object_instead_of_catalog_id(client, tmp_path, capsys):
    config = TINY_CONFIGS["gemma2"]
    r = client.post("/api/v1/estimate", json={"model": {"config": config}, "method": "full", "device": "cpu",
                                              "attn_implementation": "eager"})
    assert r.status_code == 200, r.text
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert cli_main(["estimate", "--config", str(path), "--method", "full", "--device", "cpu", "--attn", "eager",
                     "--json"]) == 0
    assert r.json() == json.loads(capsys.readouterr().out)
    assert r.json()["request"]["model"] == {"config": config}


@pytest.mark.parametrize("body,targets", [
    ({"model": "gpt2", "method": "lora"}, ["c_attn"]),
    ({"model": "gpt2", "method": "lora", "lora": {"target_modules": None}}, ["c_attn"]),
    ({"model": "phi-4", "method": "lora", "recipe": "none"}, ["qkv_proj"]),
    ({"model": "gpt2", "method": "lora", "lora": {"target_modules": ["c_proj"]}}, ["c_proj"]),
], ids=["gpt2-left-out", "gpt2-null", "phi3-no-recipe", "gpt2-named"])
def test_lora_targets_default_to_the_models(client, body, targets):
    r = client.post("/api/v1/estimate", json=body)
    assert r.status_code == 200
    assert r.json()["request"]["lora"]["target_modules"] == targets


def test_the_schema_documents_the_default_targets(client):
    lora = client.get("/openapi.json").json()["components"]["schemas"]["LoraIn"]["properties"]["target_modules"]
    assert lora.get("default") is None and "null (the default): peft's default" in lora["description"]


# ---- capacity and compare --------------------------------------------------------------------------

def test_capacity_rows_equal_the_estimator(client):
    body = {"model": "llama-2-7b", "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
            "seq_len": 1024, "gpus": ["rtx-4090", "a100-80gb", "rtx-3060-12gb"], "multi_gpu": "fsdp"}
    doc = client.post("/api/v1/capacity", json=body).json()
    req = request_from_fields({"model": "llama-2-7b", "recipe": DEFAULT_RECIPE, "method": "qlora", "seq_len": 1024,
                               "lora": {"r": 16, "target_modules": "all-linear"}})
    expected = capacity(req, ["rtx-4090", "a100-80gb", "rtx-3060-12gb"], sharding="fsdp")
    assert [r["gpu"] for r in doc["rows"]] == ["rtx-4090", "a100-80gb", "rtx-3060-12gb"]
    for row, exp in zip(doc["rows"], expected, strict=True):
        assert (row["fits"], row["max_batch_size"], row["max_seq_len"], row["gpus_needed"]) == (
            exp.fits, exp.max_batch_size, exp.max_seq_len, exp.gpus_needed)
    assert doc["multi_gpu"] == "fsdp"


def test_capacity_over_the_whole_catalog(client):
    doc = client.post("/api/v1/capacity", json={"model": "llama-2-70b", "method": "full"}).json()
    assert len(doc["rows"]) == len(gpus())
    assert not any(r["fits"] for r in doc["rows"])  # 70B full fine-tuning fits no single GPU
    assert any(r["gpus_needed"] for r in doc["rows"])


def test_compare_defaults_to_full_lora_qlora(client):
    doc = client.post("/api/v1/compare", json={"model": "llama-2-7b"}).json()
    labels = [r["label"] for r in doc["results"]]
    assert labels == ["full", "lora r=16", "qlora r=16"]
    peaks = [r["document"]["peak_bytes"] for r in doc["results"]]
    assert peaks[0] > peaks[1] > peaks[2]


def test_compare_ranks_and_a_failing_column(client):
    body = {"model": "llama-2-7b", "method": "lora", "device": "cpu", "variants": [
        {"r": 8}, {"r": 64}, {"method": "qlora", "label": "4-bit"}, {"r": 5000, "label": "too big"}]}
    results = client.post("/api/v1/compare", json=body).json()["results"]
    assert [r["label"] for r in results] == ["lora r=8", "lora r=64", "4-bit", "too big"]
    assert results[0]["document"]["params"]["trainable"] < results[1]["document"]["params"]["trainable"]
    assert results[3]["document"] is None and "lora.r" in results[3]["error"]


# ---- errors: located 422s, 404s, 413s, never a 500 -----------------------------------------------

BAD_BODIES = {
    "missing-model": ({}, ["body", "model"]),
    "bad-method": ({"model": "llama-2-7b", "method": "prefix"}, ["body", "method"]),
    "zero-batch": ({"model": "llama-2-7b", "batch_size": 0}, ["body", "batch_size"]),
    "negative-seq": ({"model": "llama-2-7b", "seq_len": -1}, ["body", "seq_len"]),
    "absurd-seq": ({"model": "llama-2-7b", "seq_len": 10**12}, ["body", "seq_len"]),
    "r-zero": ({"model": "llama-2-7b", "lora": {"r": 0}}, ["body", "lora", "r"]),
    "r-over-dim": ({"model": "llama-2-7b", "lora": {"r": 5000}}, ["body", "lora", "r"]),
    "unknown-module": ({"model": "llama-2-7b", "lora": {"target_modules": ["c_attn"]}},
                       ["body", "lora", "target_modules"]),
    "empty-targets": ({"model": "llama-2-7b", "lora": {"target_modules": []}}, ["body", "lora", "target_modules"]),
    "unknown-field": ({"model": "llama-2-7b", "rank": 8}, ["body", "rank"]),
    "bad-blocksize": ({"model": "llama-2-7b", "method": "qlora", "quant": {"blocksize": 63}},
                      ["body", "quant", "blocksize"]),
    "quant-on-full": ({"model": "llama-2-7b", "method": "qlora", "quant": {"type": "none"}}, ["body", "quant", "type"]),
    "flash-on-cpu": ({"model": "llama-2-7b", "attn_implementation": "flash_attention_2", "device": "cpu"},
                     ["body", "attn_implementation"]),
    "sdpa-on-gemma2": ({"model": "gemma-2-9b", "attn_implementation": "sdpa"}, ["body", "attn_implementation"]),
    "config-not-object": ({"model": {"config": [1, 2]}}, ["body", "model"]),
    "config-missing-hidden": ({"model": {"config": {"model_type": "llama", "num_hidden_layers": 2}}}, None),
    "config-unknown-family": ({"model": {"config": {"model_type": "t5"}}}, None),
    "config-absurd-dim": ({"model": {"config": {**TINY_CONFIGS["llama-gqa"], "hidden_size": 10**12}}}, None),
    "config-string-dim": ({"model": {"config": {**TINY_CONFIGS["llama-gqa"], "hidden_size": "64"}}}, None),
}


@pytest.mark.parametrize("body,loc", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_input_is_a_located_422(client, body, loc):
    r = client.post("/api/v1/estimate", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail and all("msg" in d and d["loc"][0] == "body" for d in detail)
    if loc is not None:
        assert any(d["loc"][: len(loc)] == loc for d in detail), detail


def test_malformed_json_is_422(client):
    r = client.post("/api/v1/estimate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_unknown_gpu_is_404(client):
    r = client.post("/api/v1/capacity", json={"model": "llama-2-7b", "gpus": ["rtx-4091"]})
    assert r.status_code == 404
    assert "rtx-4090" in r.json()["suggestions"]


def test_declared_oversized_body_is_413(client, settings):
    big = {"model": {"config": {"pad": "x" * (settings.max_body_bytes + 1)}}}
    assert client.post("/api/v1/estimate", json=big).status_code == 413


def test_streamed_oversized_body_is_413(client, settings):
    def chunks():
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    r = client.post("/api/v1/estimate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_openapi_documents_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/models", "/api/v1/models/{model_id}", "/api/v1/gpus", "/api/v1/estimate",
                 "/api/v1/capacity", "/api/v1/compare"):
        assert path in spec["paths"]
    assert "EstimateOut" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# Any JSON a client can send as a config gets a 200 or a located 422, never a 500.
_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=8))
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
_keys = st.sampled_from(sorted({k for c in TINY_CONFIGS.values() for k in c}))


@hyp_settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(sorted(TINY_CONFIGS)), changes=st.dictionaries(_keys, _json, max_size=3))
def test_mutated_configs_never_crash(client, base, changes):
    config = {**TINY_CONFIGS[base], **changes}
    r = client.post("/api/v1/estimate", json={"model": {"config": config}, "method": "lora",
                                              "lora": {"target_modules": "all-linear", "r": 2}})
    assert r.status_code in (200, 422), (config, r.text)


def test_non_finite_numbers_in_a_config_are_422(client):
    body = b'{"model": {"config": {"model_type": "llama", "rms_norm_eps": Infinity}}}'
    r = client.post("/api/v1/estimate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert any(d["loc"][-1] == "config" and "finite" in d["msg"] for d in r.json()["detail"])


def test_integers_beyond_64_bits_in_a_config_are_422(client):
    r = client.post("/api/v1/estimate", json={"model": {"config": {"model_type": "llama", "vocab_size": 2**64}}})
    assert r.status_code == 422
    assert any("64 bits" in d["msg"] for d in r.json()["detail"])


def test_repeated_requests_are_answered_from_the_cache(client):
    answers = client.app.state.answers
    body = {"model": "llama-2-13b", "method": "lora", "seq_len": 333}
    first = client.post("/api/v1/estimate", json=body)
    hits = answers.hits
    # the same setting spelled with its defaults written out is the same request
    second = client.post("/api/v1/estimate", json={**body, "batch_size": 1, "dtype": "bf16"})
    assert answers.hits == hits + 1
    assert second.content == first.content


# ---- the verdict first --------------------------------------------------------------------------

VERDICT_BODY = {"model": "llama-3-8b", "method": "qlora", "recipe": "none",
                "lora": {"r": 16, "target_modules": "all-linear"}, "batch_size": 4, "seq_len": 2048}


@pytest.mark.parametrize("path", ["/api/v1/estimate", "/api/v1/capacity", "/api/v1/compare"])
def test_gpus_are_named_as_a_list_or_one_by_one(client, path):
    listed = client.post(path, json={**VERDICT_BODY, "gpus": ["rtx-4090"]})
    single = client.post(path, json={**VERDICT_BODY, "gpu": "rtx-4090"})
    assert listed.status_code == single.status_code == 200, listed.text
    assert listed.json() == single.json()


def test_the_estimate_opens_with_a_verdict_per_gpu_named(client):
    doc = client.post("/api/v1/estimate", json={**VERDICT_BODY, "gpus": ["rtx-4090", "h100-sxm-80gb"]}).json()
    assert list(doc)[0] == "verdicts"
    short, roomy = doc["verdicts"]
    assert (short["gpu"], short["fits"], roomy["gpu"], roomy["fits"]) == ("rtx-4090", False, "h100-sxm-80gb", True)
    assert short["headroom_bytes"] == short["usable_bytes"] - doc["peak_bytes"] < 0
    assert short["suggestions"] and all(s["peak_bytes"] <= short["usable_bytes"] for s in short["suggestions"])
    assert roomy["suggestions"] == [] and roomy["max_batch_size"] > VERDICT_BODY["batch_size"]
    assert [f["gpu"] for f in doc["fits"]] == ["rtx-4090", "h100-sxm-80gb"]
    assert client.post("/api/v1/estimate", json=VERDICT_BODY).json()["verdicts"] == []  # none named, none given
