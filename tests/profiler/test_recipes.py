"""The recipe choices measured for real on CPU (issue 19): the loop the profiler runs is the one the
request names, micro-batches accumulate before each optimizer step, the forward runs under the
autocast it names, and the estimate's phases follow the measured ones."""

from dataclasses import replace

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()

from tunefit.estimator import EstimateRequest, LoraSpec  # noqa: E402
from tunefit.profiler import measure  # noqa: E402

pytestmark = LIBRARY_NOTICES

# A vocabulary large next to the width, so the logits a plain loop holds are a visible share.
CONFIG = dict(model_type="llama", hidden_size=128, intermediate_size=344, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=6000)
# (method, loop, grad_accum, gradient checkpointing, autocast, loss)
CASES = {
    "full-plain": ("full", "plain", 1, False, "none", "standard"),
    "full-accum": ("full", "trainer", 2, False, "none", "standard"),
    "lora-plain-gc": ("lora", "plain", 1, True, "none", "standard"),
    "lora-accum-plain": ("lora", "plain", 3, False, "none", "standard"),
    "qlora-accum-gc": ("qlora", "trainer", 2, True, "none", "standard"),
    "lora-autocast-bf16": ("lora", "trainer", 1, False, "bf16", "standard"),
    "qlora-autocast-bf16-gc": ("qlora", "trainer", 1, True, "bf16", "standard"),
    "qlora-autocast-fp16-plain": ("qlora", "plain", 1, False, "fp16", "standard"),
    # TRL's fused LM head, its torch fold on a CPU
    "full-chunked-accum": ("full", "trainer", 2, False, "none", "chunked"),
    "lora-chunked-plain-gc": ("lora", "plain", 1, True, "none", "chunked"),
    "qlora-chunked-autocast-bf16": ("qlora", "trainer", 1, True, "bf16", "chunked"),
}


def _request(method, loop, grad_accum, gc, autocast, loss="standard", batch_size=2):
    return EstimateRequest({"config": CONFIG}, method=method, device="cpu", batch_size=batch_size, seq_len=32,
                           lora=LoraSpec(r=4, alpha=8.0, target_modules="all-linear"), loop=loop,
                           grad_accum=grad_accum, gradient_checkpointing=gc, attn_implementation="sdpa",
                           autocast=autocast, dtype="fp16" if autocast == "fp16" else "bf16", loss=loss)


@pytest.fixture(scope="module")
def measured():
    return {name: measure(_request(*case), steps=2) for name, case in CASES.items()}


@pytest.mark.parametrize("name", CASES)
def test_each_optimizer_step_follows_its_micro_batches(measured, name):
    grad_accum = CASES[name][2]
    phases = [(r["phase"], r["step"]) for r in measured[name]["measured"]["timeline"]]
    cycle = [[("forward", s), ("backward", s)] * grad_accum + [("optimizer_step", s)] for s in (1, 2)]
    assert phases == cycle[0] + cycle[1]
    assert measured[name]["request"]["grad_accum"] == grad_accum
    assert measured[name]["request"]["loop"] == CASES[name][1]
    assert measured[name]["request"]["autocast"] == CASES[name][4]
    assert measured[name]["request"]["loss"] == CASES[name][5]


@pytest.mark.parametrize("name", CASES)
def test_every_phase_is_estimated_within_half_a_percent(measured, name):
    """Per phase, not only the peak: the loop and the accumulation move different phases."""
    _each_phase_within_half_a_percent(measured[name])


def _each_phase_within_half_a_percent(r):
    predicted = {}
    for p in r["prediction"]["phases"]:
        predicted[p["phase"]] = max(predicted.get(p["phase"], 0), p["allocated_bytes"])
    for phase, bytes_measured in r["measured"]["phase_peaks"].items():
        assert abs(predicted[phase] - bytes_measured) <= 0.005 * bytes_measured, (phase, predicted[phase],
                                                                                  bytes_measured)


def test_autocast_cannot_be_simulated_and_says_why():
    from tunefit.profiler import BuildError, simulate

    with pytest.raises(BuildError, match="no autocast for the meta device"):
        simulate(_request("lora", "trainer", 1, False, "bf16"))


def test_a_plain_loop_under_autocast_holds_fp32_logits(measured):
    """accelerate converts a mixed-precision forward's outputs to fp32: what a plain loop holds."""
    step = measured["qlora-autocast-fp16-plain"]["measured"]["phase_peaks"]["optimizer_step"]
    trainer = measure(_request("qlora", "trainer", 1, False, "fp16"), steps=2)["measured"]["phase_peaks"]
    assert step - trainer["optimizer_step"] == 2 * 32 * CONFIG["vocab_size"] * 4 + 4


def test_a_plain_loop_measures_the_logits_it_holds(measured):
    trainer = measure(_request("full", "trainer", 1, False, "none"), steps=2)["measured"]["phase_peaks"]
    plain = measured["full-plain"]["measured"]["phase_peaks"]
    logits = 2 * 32 * CONFIG["vocab_size"] * 2  # bf16, b x s x V
    assert plain["optimizer_step"] - trainer["optimizer_step"] == logits + 4  # and the fp32 loss
    assert plain["backward"] - trainer["backward"] == logits  # the loss: held by both through backward


def test_the_chunked_loss_cannot_be_simulated_and_says_why():
    from tunefit.profiler import BuildError, simulate

    with pytest.raises(BuildError, match="Triton kernels on CUDA"):
        simulate(_request("lora", "trainer", 1, False, "none", "chunked"))


def test_the_chunked_loss_holds_a_buffer_of_32768_columns_whatever_the_vocabulary(measured):
    """TRL allocates ``mm_buf`` as ``min(N, 4096) x 32768`` even for a 6,000-token vocabulary: at a
    few tokens the fused head needs more than the logits it avoids, measured and estimated alike."""
    standard = measure(_request("full", "trainer", 2, False, "none"), steps=2)["measured"]["phase_peaks"]
    chunked = measured["full-chunked-accum"]["measured"]["phase_peaks"]
    buffer = 2 * 31 * 32768 * 2  # N = b·(s-1) rows, bf16
    assert chunked["forward"] - standard["forward"] > buffer


def test_the_chunked_loss_scores_a_single_sequence_through_a_view():
    """b = 1 on a CPU: ``reshape(-1, e)`` of the shifted state is a view, the whole state kept."""
    r = measure(_request("lora", "trainer", 1, False, "none", "chunked", batch_size=1), steps=2)
    measured, predicted = r["measured"]["peak_allocated_bytes"], r["prediction"]["peak_allocated_bytes"]
    assert abs(predicted - measured) <= 0.005 * measured, (predicted, measured)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_a_dpo_step_is_estimated_within_half_a_percent_per_phase(method):
    """DPO written after TRL's DPOTrainer: chosen and rejected rows in one batch through the fused
    head, the reference scored under no_grad (adapters disabled, or the frozen copy, whose weights
    the counter holds from the start)."""
    r = measure(replace(_request(method, "trainer", 1, method == "qlora", "none"), objective="dpo", loss=None),
                steps=2)
    assert (r["request"]["objective"], r["request"]["loss"]) == ("dpo", "chunked")
    _each_phase_within_half_a_percent(r)
    if method == "full":  # the reference copy: the load holds two models' weights
        assert r["measured"]["phase_peaks"]["load"] == r["prediction"]["phases"][0]["allocated_bytes"]


@pytest.mark.parametrize("mode,new_tokens,phases", [("generate", 0, {"prefill"}), ("forward", 0, {"forward"}),
                                                    ("generate", 1, {"prefill"}),
                                                    ("generate", 300, {"prefill", "decode"})])
def test_inference_runs_the_mode_it_names(mode, new_tokens, phases):
    """generate()'s prefill is read until its first token is chosen, its decoding after; 300 tokens
    after a 16-token prompt make the grown cache the peak."""
    r = measure(EstimateRequest({"config": CONFIG}, method="inference", device="cpu", batch_size=4,
                                seq_len=16 if new_tokens else 32, inference_mode=mode, new_tokens=new_tokens),
                steps=1)
    assert r["request"]["inference_mode"] == mode and set(r["measured"]["phase_peaks"]) == {"load", *phases}
    _each_phase_within_half_a_percent(r)
    if new_tokens > 1:
        assert r["measured"]["peak_phase"] == "decode"
