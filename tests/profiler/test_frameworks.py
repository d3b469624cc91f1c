"""Hugging Face Trainer and TRL's SFTTrainer measured themselves on CPU (issue 19): the recipes that
follow them are held to their own loop, accelerate's autocast, their accumulation, optimizers and
(TRL) fused LM head, not to ours."""

import pytest

from tests.profiler.support import LIBRARY_NOTICES, require_profiler_extra

require_profiler_extra()

from tunefit.estimator.request import request_from_fields  # noqa: E402
from tunefit.profiler import measure  # noqa: E402
from tunefit.profiler.frameworks import (  # noqa: E402
    measure_with_dpo_trainer,
    measure_with_sft_trainer,
    measure_with_trainer,
)

pytestmark = LIBRARY_NOTICES

CONFIG = dict(model_type="llama", hidden_size=128, intermediate_size=344, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, vocab_size=6000)
BASE = {"model": {"config": CONFIG}, "device": "cpu", "batch_size": 2, "seq_len": 32, "attn_implementation": "sdpa"}
CASES = {
    "hf-trainer-lora": {"recipe": "hf-trainer", "method": "lora"},
    "hf-trainer-full-accum": {"recipe": "hf-trainer", "method": "full", "grad_accum": 2},
    "hf-trainer-qlora-bf16": {"recipe": "hf-trainer", "method": "qlora", "autocast": "bf16"},
    # the paper's setup but its paged optimizer (a CUDA unified-memory allocation)
    "qlora-paper-adamw": {"recipe": "qlora-paper", "optimizer": "adamw", "lora": {"r": 8}},
}


# TRL's trainers under their defaults (trl-sft, trl-dpo: checkpointing, bf16 autocast, fused AdamW, the
# fused LM head; DPO's reference the policy without adapters, or a frozen copy; QLoRA without kbit
# preparation, its adapters cast to bf16)
TRL_CASES = {
    "trl-sft-lora": {"recipe": "trl-sft", "method": "lora"},
    "trl-sft-full-accum": {"recipe": "trl-sft", "method": "full", "grad_accum": 2},
    "trl-sft-qlora": {"recipe": "trl-sft", "method": "qlora", "lora": {"target_modules": "all-linear"}},
    "trl-dpo-lora": {"recipe": "trl-dpo", "method": "lora"},
    "trl-dpo-full": {"recipe": "trl-dpo", "method": "full"},
    "trl-dpo-qlora": {"recipe": "trl-dpo", "method": "qlora"},
}


@pytest.fixture(scope="module")
def trainer_runs():
    return {name: measure_with_trainer(request_from_fields({**BASE, **fields}), steps=3)
            for name, fields in CASES.items()}


@pytest.mark.parametrize("name", CASES)
def test_the_estimate_holds_to_hugging_face_trainer(trainer_runs, name):
    r = trainer_runs[name]
    measured, predicted = r["measured"]["peak_allocated_bytes"], r["prediction"]["peak_allocated_bytes"]
    assert abs(predicted - measured) <= 0.005 * measured, (predicted, measured)
    assert r["measured"]["framework"] == "transformers.Trainer" and len(r["measured"]["timeline"]) == 3


def test_the_trainer_loop_keeps_what_our_loop_keeps_but_its_batch(trainer_runs):
    """Trainer's step holds the collated batch (input ids and labels, int64) beside what the
    profiler's own trainer loop holds: the loop the estimate models is the Trainer's."""
    request = request_from_fields({**BASE, **CASES["hf-trainer-lora"]})
    own = measure(request, steps=3)["measured"]["peak_allocated_bytes"]
    extra = trainer_runs["hf-trainer-lora"]["measured"]["peak_allocated_bytes"] - own
    batch = 2 * 32 * 8  # b x s int64, once for the ids and once for the labels
    assert 0 <= extra <= 2 * batch + 1024, extra


@pytest.mark.parametrize("name", TRL_CASES)
def test_the_estimate_holds_to_trls_trainers(name):
    request = request_from_fields({**BASE, **TRL_CASES[name]})
    dpo = request.objective == "dpo"
    r = (measure_with_dpo_trainer if dpo else measure_with_sft_trainer)(request, steps=3)
    measured, predicted = r["measured"]["peak_allocated_bytes"], r["prediction"]["peak_allocated_bytes"]
    assert abs(predicted - measured) <= 0.005 * measured, (predicted, measured)
    assert r["measured"]["framework"] == ("trl.DPOTrainer" if dpo else "trl.SFTTrainer")
    assert r["request"]["loss"] == "chunked"


def test_each_framework_refuses_the_loss_it_does_not_compute():
    from tunefit.profiler import BuildError

    with pytest.raises(BuildError, match="TRL"):
        measure_with_trainer(request_from_fields({**BASE, "loss": "chunked"}))
    with pytest.raises(BuildError, match="chunked"):
        measure_with_sft_trainer(request_from_fields({**BASE, "loss": "standard"}))
    with pytest.raises(BuildError, match="dpo"):
        measure_with_dpo_trainer(request_from_fields({**BASE, "loss": "chunked"}))
    with pytest.raises(BuildError, match="prepare_model_for_kbit_training"):
        measure_with_sft_trainer(request_from_fields({**BASE, "method": "qlora", "loss": "chunked"}))
