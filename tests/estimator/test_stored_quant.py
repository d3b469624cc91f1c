"""A checkpoint stored in bitsandbytes is read as from_pretrained loads it: LoRA on it is QLoRA on
the stored quantization (over any other given), full fine-tuning is refused, other stored
quantizations are named in the assumptions."""

import pytest

from tunefit.estimator import EstimateError, estimate, get_model
from tunefit.estimator.quant import QuantSpec
from tunefit.estimator.request import request_from_fields
from tunefit.estimator.stored_quant import stored_quant

BASE = get_model("qwen2.5-0.5b").config


def _stored(**quantization) -> dict:
    return {**BASE, "quantization_config": {"quant_method": "bitsandbytes", **quantization}}


@pytest.mark.parametrize("quantization, expected", [
    ({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
     QuantSpec("nf4", True, 64)),
    ({"load_in_4bit": True}, QuantSpec("fp4", False, 64)),  # BitsAndBytesConfig's defaults
    ({"load_in_8bit": True}, QuantSpec("int8", False, 64)),
    ({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "llm_int8_skip_modules": ["lm_head"]},
     QuantSpec("nf4", False, 64)),
], ids=["nf4-double", "defaults-fp4", "int8", "skips-lm-head"])
def test_the_stored_quantization_is_read(quantization, expected):
    assert stored_quant(_stored(**quantization)) == expected


@pytest.mark.parametrize("config", [
    BASE, {**BASE, "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
], ids=["unquantized", "fp8"])
def test_other_configs_have_no_stored_bitsandbytes(config):
    assert stored_quant(config) is None


def test_a_dynamic_quantization_is_refused_with_the_modules():
    with pytest.raises(EstimateError, match="model.layers.1.mlp"):
        stored_quant(_stored(load_in_4bit=True, llm_int8_skip_modules=["lm_head", "model.layers.1.mlp"]))


@pytest.mark.parametrize("method", [None, "lora", "qlora"], ids=["default", "lora", "qlora"])
def test_lora_on_a_stored_4bit_checkpoint_is_qlora_on_it(method):
    config = _stored(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    req = request_from_fields({"model": {"config": config}, "method": method, "recipe": "none",
                               "quant": {"type": "int8"}})  # the stored one wins, as in from_pretrained
    est = estimate(req)
    assert est.request.method == "qlora" and est.request.quant == QuantSpec("nf4", True, 64)
    plain = estimate(request_from_fields({"model": "qwen2.5-0.5b", "method": "qlora", "recipe": "none"}))
    assert est.peak_bytes == plain.peak_bytes
    assert any("stored in bitsandbytes nf4" in a for a in est.assumptions)


def test_full_fine_tuning_of_a_stored_checkpoint_is_refused():
    with pytest.raises(EstimateError, match="purely quantized"):
        request_from_fields({"model": {"config": _stored(load_in_4bit=True)}, "method": "full"})


@pytest.mark.parametrize("method, words", [
    ("fp8", "FP8 checkpoint is dequantized"), ("mxfp4", "MXFP4 checkpoint is dequantized"),
], ids=["fp8", "mxfp4"])
def test_a_dequantized_checkpoint_is_named_in_the_assumptions(method, words):
    config = {**BASE, "quantization_config": {"quant_method": method}}
    est = estimate(request_from_fields({"model": {"config": config}, "method": "lora"}))
    assert any(words in a for a in est.assumptions)
    assert est.peak_bytes == estimate(request_from_fields({"model": "qwen2.5-0.5b", "method": "lora"})).peak_bytes


@pytest.mark.parametrize("method", ["gptq", "awq", "compressed-tensors"], ids=["gptq", "awq", "compressed"])
def test_a_weight_only_format_is_refused_with_the_reason(method):
    config = {**BASE, "quantization_config": {"quant_method": method, "bits": 4}}
    with pytest.raises(EstimateError, match=f"stored in {method}.*not modelled yet"):
        estimate(request_from_fields({"model": {"config": config}, "method": "lora"}))
