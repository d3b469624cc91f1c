"""A training framework measured itself: Hugging Face Trainer (transformers 5.23) runs the request's
steps with its own loop, accelerate's mixed precision, gradient accumulation, clipping and
optimizer, and the same counter records each optimizer step's peak. Where the estimate models
what a framework does (``--recipe hf-trainer``), this is what it is held to, not our own loop."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from tunefit.estimator import EstimateRequest, estimate, to_document
from tunefit.estimator.request import normalize

from .build import BuildError, load_model, prepare_for_training, vocab_size
from .run import Counter, _trainable, environment

# The request's optimizer -> Hugging Face Trainer's ``optim`` name (transformers 5.23 ``OptimizerNames``)
TRAINER_OPTIMIZERS = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit",
                      "paged_adamw": "paged_adamw_32bit", "paged_adamw_8bit": "paged_adamw_8bit", "sgd": "sgd"}
COUNTER = "live tensor storage bytes (TorchDispatchMode, exact on CPU) over each Trainer optimizer step"


def measure_with_trainer(request: EstimateRequest, steps: int = 3) -> dict[str, Any]:
    """Train ``request`` for ``steps`` optimizer steps with Hugging Face Trainer on CPU; the peak of
    each step after the first (the steady state), next to the estimate."""
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    req, _ = normalize(request)
    if req.method == "inference" or req.device != "cpu":
        raise BuildError("the Trainer measurement trains on CPU")
    if req.optimizer not in TRAINER_OPTIMIZERS:
        raise BuildError(f"Hugging Face Trainer has no optimizer for {req.optimizer!r}")
    if req.loop != "trainer":
        raise BuildError("Hugging Face Trainer runs its own loop (--loop trainer)")
    device = torch.device("cpu")
    prediction = to_document(estimate(req))
    started = time.perf_counter()
    torch.manual_seed(0)
    base = load_model(req, device)
    model = prepare_for_training(base, req)  # the user's code before the Trainer: peft and its kbit preparation
    vocab = vocab_size(base)
    rows = [{"input_ids": ids, "labels": ids.clone()}
            for ids in torch.randint(0, vocab, (steps * req.grad_accum * req.batch_size, req.seq_len))]
    counter = Counter(device, model)
    peaks: list[dict[str, Any]] = []

    class StepPeaks(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            counter.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            peaks.append(counter.end("step", state.global_step))

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=req.batch_size, gradient_accumulation_steps=req.grad_accum,
            max_steps=steps, optim=TRAINER_OPTIMIZERS[req.optimizer], bf16=req.autocast == "bf16",
            fp16=req.autocast == "fp16", use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
            dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False, learning_rate=1e-4)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator,
                          callbacks=[StepPeaks()])
        with counter:
            trainer.train()
    steady = [p for p in peaks if p["step"] >= 2] or peaks
    return {
        "request": prediction["request"],
        "prediction": prediction,
        "measured": {"counter": COUNTER, "timeline": peaks, "peak_allocated_bytes": max(
            p["peak_allocated_bytes"] for p in steady), "framework": "transformers.Trainer"},
        "trainable_params": _trainable(model),
        "steps": steps,
        "environment": environment(device),
        "duration_s": round(time.perf_counter() - started, 3),
    }
