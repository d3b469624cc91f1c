"""The recipe choices measured for real on CPU (issue 19): the loop the profiler runs is the one the
request names, micro-batches accumulate before each optimizer step, the forward runs under the
autocast it names, and the estimate's phases follow the measured ones."""

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()

from tunefit.estimator import EstimateRequest, LoraSpec  # noqa: E402
from tunefit.profiler import measure  # noqa: E402

pytestmark = LIBRARY_NOTICES

# A vocabulary large next to the width, so the logits a plain loop holds are a visible share.
CONFIG = dict(model_type="llama", hidden_size=128, intermediate_size=344, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=6000)
# (method, loop, grad_accum, gradient checkpointing, autocast)
CASES = {
    "full-plain": ("full", "plain", 1, False, "none"),
    "full-accum": ("full", "trainer", 2, False, "none"),
    "lora-plain-gc": ("lora", "plain", 1, True, "none"),
    "lora-accum-plain": ("lora", "plain", 3, False, "none"),
    "qlora-accum-gc": ("qlora", "trainer", 2, True, "none"),
    "lora-autocast-bf16": ("lora", "trainer", 1, False, "bf16"),
    "qlora-autocast-bf16-gc": ("qlora", "trainer", 1, True, "bf16"),
    "qlora-autocast-fp16-plain": ("qlora", "plain", 1, False, "fp16"),
}


def _request(method, loop, grad_accum, gc, autocast):
    return EstimateRequest({"config": CONFIG}, method=method, device="cpu", batch_size=2, seq_len=32,
                           lora=LoraSpec(r=4, alpha=8.0, target_modules="all-linear"), loop=loop,
                           grad_accum=grad_accum, gradient_checkpointing=gc, attn_implementation="sdpa",
                           autocast=autocast, dtype="fp16" if autocast == "fp16" else "bf16")


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


@pytest.mark.parametrize("name", CASES)
def test_every_phase_is_estimated_within_half_a_percent(measured, name):
    """Per phase, not only the peak: the loop and the accumulation move different phases."""
    r = measured[name]
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
