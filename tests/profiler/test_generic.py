"""Architectures the formulas do not know, answered from transformers' own code: the meta-device
simulation fitted as exact polynomials in batch and sequence (profiler.fit, profiler.generic).

- For families the formulas know, the fit equals direct simulations at shapes it never saw, and
  the formula within 1 % over b 1-16, s 128-8,192 (held to the formulas' own accuracy against the
  same simulation, tests/profiler/test_simulate.py).
- For Gemma 4 (sliding windows: a piece of the fit on each side), Qwen3.5 (gated-delta linear
  attention) and LFM2 (a hybrid of short convolutions and attention), the fitted answer equals a
  direct simulation at three shapes not used for the fit (lengths that are multiples of 64; off
  them within 0.5 %); Nemotron-H's Mamba path pads the sequence to its chunks, so it is answered
  by direct simulation and says so.
"""

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()
pytestmark = LIBRARY_NOTICES

from tunefit.estimator import estimate  # noqa: E402
from tunefit.estimator.request import MAX_BATCH, normalize, request_from_fields  # noqa: E402
from tunefit.estimator.simulated import simulated_capacity, simulated_document  # noqa: E402
from tunefit.profiler.fit import BATCHED_BASIS, Poly, _undominated  # noqa: E402
from tunefit.profiler.generic import direct_simulation, fitted_setting, simulated_step  # noqa: E402

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

UNSEEN = [(4, 512), (1, 1000), (16, 8192)]


def _small(model_type: str, **fields) -> dict:
    """The config class's own defaults, shrunk to a few layers of width 64 (what its class builds)."""
    config = transformers.AutoConfig.for_model(model_type).to_dict()
    sizes = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                 head_dim=16, max_position_embeddings=4096, num_hidden_layers=4)
    config.update({k: v for k, v in sizes.items() if k in config})
    return {**config, **fields}


NEW_ARCHITECTURES = {
    "gemma4_text": _small("gemma4_text", vocab_size_per_layer_input=512, hidden_size_per_layer_input=16,
                          per_layer_config={}, global_head_dim=32, sliding_window=512,
                          layer_types=["sliding_attention"] * 3 + ["full_attention"]),
    "qwen3_5_text": _small("qwen3_5_text", linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                           linear_num_value_heads=4, layer_types=["linear_attention"] * 3 + ["full_attention"]),
    "lfm2": _small("lfm2", block_ff_dim=128, layer_types=["conv", "conv", "full_attention", "conv"]),
}


def _request(config: dict, method: str, b: int = 4, s: int = 512, recipe: str = "none"):
    return request_from_fields({"model": {"config": config}, "method": method, "recipe": recipe,
                                "batch_size": b, "seq_len": s})


def _simulated(step, b: int, s: int) -> int:
    """A direct simulation of the step's (normalized) request at b x s: its steady-state peak."""
    peaks, _ = direct_simulation(step.request)(b, s)
    return max(peaks.values())


# Wide enough that the formulas' fixed terms are small beside the tensors (their error on the
# tiniest configs is up to a few percent, docs/accuracy.md)
KNOWN = {
    "llama": dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=2, vocab_size=8000),
    "qwen2": dict(model_type="qwen2", hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                  num_attention_heads=8, num_key_value_heads=4, vocab_size=8000),
}


@pytest.mark.parametrize("name, method", [("llama", "full"), ("llama", "lora"), ("llama", "qlora"), ("qwen2", "lora")],
                         ids=["llama-full", "llama-lora", "llama-qlora", "qwen2-lora"])
def test_the_fit_of_a_known_family_meets_simulation_and_formula(name, method):
    req, _ = normalize(_request(KNOWN[name], method))
    fitted = fitted_setting(req).fit
    assert fitted is not None
    direct = direct_simulation(req)
    for b, s in UNSEEN:
        fit_peak = max(fitted.phase_peaks(b, s).values())
        assert fit_peak == max(direct(b, s)[0].values()), (b, s)
        formula = estimate(_request(KNOWN[name], method, b, s)).peak_allocated_bytes
        assert abs(fit_peak - formula) / formula < 0.01, (b, s, fit_peak, formula)


@pytest.mark.parametrize("name", sorted(NEW_ARCHITECTURES), ids=sorted(NEW_ARCHITECTURES))
def test_a_new_architecture_is_fitted_and_meets_direct_simulation(name):
    config = NEW_ARCHITECTURES[name]
    step = simulated_step(_request(config, "lora"))
    assert step.fitted, step.how
    # three shapes the fit never simulated, on both sides of Gemma 4's 512-token window: exact
    for b, s in [(5, 320), (1, 768), (7, 1024)]:
        assert max(step.phase_peaks(b, s).values()) == _simulated(step, b, s), (b, s)
    # off the multiples of 64 the target's kernels pad a little (CUDA's attention rounds its rows)
    fitted, direct = max(step.phase_peaks(1, 700).values()), _simulated(step, 1, 700)
    assert abs(fitted - direct) / direct < 0.005


def test_a_path_that_pads_to_chunks_is_simulated_directly_and_says_so():
    config = _small("nemotron_h", layers_block_type=["linear_attention", "moe", "full_attention", "mlp"],
                    mamba_num_heads=4, mamba_head_dim=16, ssm_state_size=16, n_groups=2, n_routed_experts=4,
                    moe_intermediate_size=32, moe_shared_expert_intermediate_size=64, time_step_limit=[0.0, 1e9])
    step = simulated_step(_request(config, "lora", b=3, s=300))
    assert not step.fitted and "simulated directly" in step.how["why"]
    doc = simulated_document(step, ["rtx-4090"])
    assert doc["source"] == "simulated" and "this shape alone" in doc["verdicts"][0]["sentence"]
    assert doc["peak_allocated_bytes"] == _simulated(step, 3, 300)
    with pytest.raises(Exception, match="capacity searches many shapes"):
        simulated_capacity(step)


def test_the_default_recipe_keeps_what_the_meta_device_cannot_run_and_says_so():
    step = simulated_step(_request(NEW_ARCHITECTURES["lfm2"], "lora", recipe="trl-sft"))
    excepted = dict(step.request.recipe_exceptions)
    assert set(excepted) == {"optimizer", "autocast", "loss"}
    assert step.request.optimizer == "adamw" and step.request.autocast == "none"
    doc = simulated_document(step, ["rtx-4090"])
    assert doc["request"]["recipe_exceptions"] == excepted
    assert any("is not applied" in a for a in doc["assumptions"])
    with pytest.raises(Exception, match="cannot be simulated"):  # given by the user, it is refused
        simulated_step(request_from_fields({"model": {"config": NEW_ARCHITECTURES["lfm2"]}, "recipe": "none",
                                            "optimizer": "adamw_fused"}))


def test_capacity_reads_the_fit():
    step = simulated_step(_request(NEW_ARCHITECTURES["qwen3_5_text"], "lora"))
    rows = simulated_capacity(step, ["rtx-4090"])
    usable = rows[0].usable_bytes
    b = rows[0].max_batch_size
    assert step.peak(b, 512)[2] <= usable and (b == MAX_BATCH or usable < step.peak(b + 1, 512)[2])


def test_dominated_moments_are_dropped():
    low = Poly((1, 1, 1, 1, 0, 0), BATCHED_BASIS)
    high = Poly((2, 1, 1, 1, 0, 0), BATCHED_BASIS)
    crossing = Poly((0, 0, 0, 0, 0, 1), BATCHED_BASIS)
    assert set(_undominated({low, high, crossing})) == {high, crossing}
