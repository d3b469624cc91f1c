"""The verdict first (issue 20): whether a plan fits a GPU and by how much, the largest batch and
sequence, and the changes that make it fit - each change the whole plan estimated again."""

import pytest

from tunefit.estimator import estimate, get_gpu, max_batch_size, max_seq_len
from tunefit.estimator.advice import KINDS, verdict
from tunefit.estimator.document import request_document
from tunefit.estimator.request import request_from_fields

HEADLINE = {"model": "llama-3-8b", "method": "qlora", "lora": {"r": 16, "target_modules": "all-linear"},
            "batch_size": 4, "seq_len": 2048}

PLANS = {
    # the libraries' defaults: 1.3 GiB over a 24 GiB card, the logits half the peak
    "headline-libraries-4090": ({**HEADLINE, "recipe": "none"}, "rtx-4090", False),
    # TRL SFTTrainer's defaults: fits with room
    "headline-trl-4090": ({**HEADLINE, "recipe": "trl-sft"}, "rtx-4090", True),
    # no single change is enough on a 12 GiB card: the cheapest together
    "headline-libraries-3060": ({**HEADLINE, "recipe": "none"}, "rtx-3060-12gb", False),
    "full-8b-4090": ({"model": "llama-3-8b", "method": "full", "recipe": "trl-sft", "batch_size": 1,
                      "seq_len": 1024}, "rtx-4090", False),
    "lora-plain-4090": ({"model": "qwen3-8b", "method": "lora", "recipe": "none", "batch_size": 2,
                         "seq_len": 4096}, "rtx-4090", False),
    "inference-4090": ({"model": "llama-3-8b", "method": "inference", "batch_size": 4, "seq_len": 4096},
                       "rtx-4090", True),
    # the KV cache of 8 x 4096 tokens: fewer sequences per forward
    "inference-too-many-4090": ({"model": "llama-3-8b", "method": "inference", "batch_size": 8, "seq_len": 4096},
                                "rtx-4090", False),
}


@pytest.mark.parametrize("fields,gpu,fits", PLANS.values(), ids=PLANS.keys())
def test_the_verdict_is_the_estimate_held_to_the_gpu(fields, gpu, fits):
    est = estimate(request_from_fields(fields))
    v = verdict(est, gpu)
    usable = get_gpu(gpu).usable_bytes
    assert v.fits is fits is (est.peak_bytes <= usable)
    assert v.headroom_bytes == usable - est.peak_bytes
    assert (v.max_batch_size, v.max_seq_len) == (max_batch_size(est.request, gpu), max_seq_len(est.request, gpu))
    assert v.sentence.startswith("Fits" if fits else "Does not fit") and get_gpu(gpu).name in v.sentence
    assert f"{abs(v.headroom_bytes) / 2**30:,.1f} GiB" in v.sentence
    assert (v.suggestions == ()) is fits  # a plan that does not fit gets what to change


@pytest.mark.parametrize("fields,gpu", [(f, g) for f, g, fits in PLANS.values() if not fits],
                         ids=[k for k, (_, _, fits) in PLANS.items() if not fits])
def test_every_suggestion_is_its_plan_estimated_again_and_fits(fields, gpu):
    est = estimate(request_from_fields(fields))
    suggestions = verdict(est, gpu).suggestions
    assert suggestions
    for s in suggestions:
        changed = estimate(request_from_fields({**request_document(est), **s.change}))
        assert s.peak_bytes == changed.peak_bytes <= get_gpu(gpu).usable_bytes, s.label
        assert changed.peak_bytes < est.peak_bytes


def test_the_cheapest_change_comes_first():
    """The headline under the libraries' defaults: the chunked loss (the result unchanged) before
    the micro-batch split, before shorter sequences, before a second GPU."""
    est = estimate(request_from_fields({**HEADLINE, "recipe": "none"}))
    labels = [s.label for s in verdict(est, "rtx-4090").suggestions]
    assert labels[0].startswith("score the loss in chunks")
    assert [label.split()[0] for label in labels] == ["score", "micro-batch", "sequences", "2"]
    split = verdict(est, "rtx-4090").suggestions[1]
    assert split.change["batch_size"] * split.change["grad_accum"] == 4  # the effective batch is kept
    assert KINDS.index("loss") < KINDS.index("micro_batch") < KINDS.index("sequence") < KINDS.index("gpus")


def test_changes_combine_where_none_alone_is_enough():
    est = estimate(request_from_fields({**HEADLINE, "recipe": "none"}))
    first = verdict(est, "rtx-3060-12gb").suggestions[0]
    assert " + " in first.label and {"loss", "batch_size"} <= set(first.change)
    fewer = {k: v for k, v in first.change.items() if k != "loss"}
    # every change in it is needed: without the chunked loss the plan does not fit
    assert estimate(request_from_fields({**request_document(est), **fewer})).peak_bytes > \
        get_gpu("rtx-3060-12gb").usable_bytes


def test_the_surprising_is_explained():
    """QLoRA prepared by peft holds an fp32 stream and fp32 logits: above LoRA's 16-bit ones here,
    and the logits half of the peak."""
    est = estimate(request_from_fields({**HEADLINE, "recipe": "none", "batch_size": 1, "seq_len": 512,
                                        "gradient_checkpointing": False}))
    lora = estimate(request_from_fields({**HEADLINE, "recipe": "none", "method": "lora", "batch_size": 1,
                                         "seq_len": 512, "gradient_checkpointing": False}))
    notes = verdict(est, "rtx-4090").explanations
    assert (est.peak_bytes >= lora.peak_bytes) is any(n.startswith("QLoRA needs more than LoRA") for n in notes)
    headline = verdict(estimate(request_from_fields({**HEADLINE, "recipe": "none"})), "rtx-4090").explanations
    assert any(n.startswith("The logits take") for n in headline)
    assert verdict(estimate(request_from_fields({**HEADLINE, "recipe": "trl-sft"})), "rtx-4090").explanations == ()
