"""Measuring tiny models on CPU in every mode: figures consistent with each other and the estimator."""

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()

from tests.estimator.tiny_configs import TINY_CONFIGS  # noqa: E402
from tunefit.estimator import EstimateRequest, LoraSpec  # noqa: E402
from tunefit.profiler import BuildError, measure  # noqa: E402

pytestmark = LIBRARY_NOTICES

# Wide enough, with few tokens, that weights dominate: the regime where QLoRA < LoRA < full.
WIDE = dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
MODES = ("inference", "full", "lora", "qlora")


def _request(method, config=WIDE, **kw):
    base = dict(method=method, device="cpu", batch_size=1, seq_len=8,
                lora=LoraSpec(r=4, alpha=8.0, target_modules="all-linear"))
    base.update(kw)
    return EstimateRequest({"config": config}, **base)


@pytest.fixture(scope="module")
def results():
    return {m: measure(_request(m)) for m in MODES}


@pytest.mark.parametrize("method", MODES)
def test_weights_after_load_equal_the_estimate_exactly(results, method):
    r = results[method]
    predicted_load = next(p for p in r["prediction"]["phases"] if p["phase"] == "load")["allocated_bytes"]
    assert r["measured"]["load"]["allocated_bytes"] == predicted_load


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_trainable_count_equals_the_estimate(results, method):
    r = results[method]
    assert r["trainable_params"]["trainable"] == r["prediction"]["params"]["trainable"]


def test_qlora_below_lora_below_full(results):
    peak = {m: results[m]["measured"]["peak_allocated_bytes"] for m in ("full", "lora", "qlora")}
    assert peak["qlora"] < peak["lora"] < peak["full"]


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_training_timeline_is_consistent(results, method):
    m = results[method]["measured"]
    timeline = m["timeline"]
    assert [(r["phase"], r["step"]) for r in timeline] == [
        (p, s) for s in (1, 2, 3) for p in ("forward", "backward", "optimizer_step")]
    for r in timeline:
        assert r["peak_allocated_bytes"] >= r["allocated_bytes"] >= m["load"]["allocated_bytes"]
    after_step = [r["allocated_bytes"] for r in timeline if r["phase"] == "optimizer_step"]
    assert after_step[0] == after_step[1] == after_step[2]  # state allocated once, nothing leaks
    assert m["steady_state_steps"] == [2, 3]
    assert m["peak_allocated_bytes"] == max(m["phase_peaks"].values())


@pytest.mark.parametrize("method", MODES)
def test_measured_peak_is_near_the_estimate(results, method):
    """A coarse guard (the accuracy report holds the real targets): within 15 %."""
    r = results[method]
    measured, predicted = r["measured"]["peak_allocated_bytes"], r["prediction"]["peak_allocated_bytes"]
    assert abs(measured - predicted) <= 0.15 * predicted


def test_inference_keeps_the_kv_cache(results):
    r = results["inference"]["measured"]
    layers, kv_dim, tokens = 2, 2 * 64, 8
    kv_cache = layers * 2 * tokens * kv_dim * 2  # k and v, bf16
    assert r["timeline"][0]["allocated_bytes"] - r["load"]["allocated_bytes"] >= kv_cache


@pytest.mark.parametrize("family", ["gpt2", "gemma2", "phi3", "falcon-mqa", "gpt_neox", "opt"])
def test_other_families_load_exactly(family):
    attn = "eager" if family == "gemma2" else "sdpa"  # Gemma 2 has no sdpa path in transformers
    r = measure(_request("lora", TINY_CONFIGS[family], lora=LoraSpec(r=4, target_modules="all-linear"),
                         attn_implementation=attn), steps=1)
    predicted_load = next(p for p in r["prediction"]["phases"] if p["phase"] == "load")["allocated_bytes"]
    assert r["measured"]["load"]["allocated_bytes"] == predicted_load
    assert r["trainable_params"]["trainable"] == r["prediction"]["params"]["trainable"]


def test_cuda_request_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.fail("this test asserts the CPU-only behaviour; run it on a machine without CUDA")
    with pytest.raises(BuildError, match="no CUDA device"):
        measure(_request("lora", device="cuda"))
