"""Training frameworks measured themselves: Hugging Face Trainer (transformers 5.23) and TRL's
SFTTrainer (trl 1.16) run the request's steps with their own loop, accelerate's mixed precision,
gradient accumulation, clipping, optimizer and (TRL) fused LM head, and the same counter records
each optimizer step's peak. Where the estimate models what a framework does (``--recipe
hf-trainer``, ``--recipe trl-sft``), this is what it is held to, not our own loop."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from tunefit.estimator import EstimateRequest, estimate, to_document
from tunefit.estimator.request import normalize

from .build import BuildError, load_model, peft_config, prepare_for_training, reference_model, vocab_size
from .run import Counter, _trainable, environment

# The request's optimizer -> Hugging Face Trainer's ``optim`` name (transformers 5.23 ``OptimizerNames``)
TRAINER_OPTIMIZERS = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit",
                      "paged_adamw": "paged_adamw_32bit", "paged_adamw_8bit": "paged_adamw_8bit", "sgd": "sgd"}
COUNTER = "live tensor storage bytes (TorchDispatchMode, exact on CPU) over each {} optimizer step"
Rows = list[dict[str, torch.Tensor]]
# make_trainer(base model, request, rows, TrainingArguments fields, callback) -> a transformers.Trainer
TrainerFactory = Callable[["PreTrainedModel", EstimateRequest, Rows, dict[str, Any], Any], Any]


def measure_with_trainer(request: EstimateRequest, steps: int = 3) -> dict[str, Any]:
    """Train ``request`` for ``steps`` optimizer steps with Hugging Face Trainer on CPU; the peak of
    each step after the first (the steady state), next to the estimate."""
    if normalize(request)[0].loss != "standard":
        raise BuildError("Hugging Face Trainer computes the standard loss; the chunked loss is TRL's "
                         "(measure_with_sft_trainer)")
    return _measure(request, steps, _hf_trainer, "transformers.Trainer")


def measure_with_dpo_trainer(request: EstimateRequest, steps: int = 3) -> dict[str, Any]:
    """Train ``request`` (objective ``dpo``) for ``steps`` optimizer steps with TRL's DPOTrainer on
    CPU: its collator, its reference forward, its fused head and metrics."""
    if request.objective != "dpo":
        raise BuildError("TRL's DPOTrainer trains the dpo objective")
    return _measure(request, steps, _dpo_trainer, "trl.DPOTrainer")


def measure_with_sft_trainer(request: EstimateRequest, steps: int = 3) -> dict[str, Any]:
    """Train ``request`` for ``steps`` optimizer steps with TRL's SFTTrainer on CPU, its fused LM
    head included (the request's ``loss`` must be ``chunked``, what SFTTrainer runs)."""
    if normalize(request)[0].loss != "chunked":
        raise BuildError("TRL's SFTTrainer scores through its fused LM head: loss 'chunked'")
    return _measure(request, steps, _sft_trainer, "trl.SFTTrainer")


def _arguments(req: EstimateRequest, steps: int, out: str) -> dict[str, Any]:
    """TrainingArguments fields that carry the request: the rest stay the framework's defaults."""
    return dict(output_dir=out, per_device_train_batch_size=req.batch_size, gradient_accumulation_steps=req.grad_accum,
                max_steps=steps, optim=TRAINER_OPTIMIZERS[req.optimizer], bf16=req.autocast == "bf16",
                fp16=req.autocast == "fp16", use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
                dataloader_num_workers=0, disable_tqdm=True, learning_rate=1e-4)


def _hf_trainer(base: PreTrainedModel, req: EstimateRequest, rows: Rows, fields: dict[str, Any],
                callback: Any) -> Any:
    """Trainer over the model as a user's script prepares it first (peft and its kbit preparation)."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    args = TrainingArguments(**fields, remove_unused_columns=False)
    return Trainer(model=prepare_for_training(base, req), args=args, train_dataset=rows,
                   data_collator=default_data_collator, callbacks=[callback])


def _trl_model(base: PreTrainedModel, req: EstimateRequest) -> dict[str, Any]:
    """How a TRL user hands over the model: the base model and, for adapters, a ``peft_config`` the
    trainer applies itself (``get_peft_model``; trl 1.16 runs no ``prepare_model_for_kbit_training``)."""
    if req.method == "qlora" and req.prepare_kbit:
        raise BuildError("TRL's trainers do not run prepare_model_for_kbit_training: prepare_kbit False")
    return {"model": base, "peft_config": peft_config(req) if req.method in ("lora", "qlora") else None}


def _sft_trainer(base: PreTrainedModel, req: EstimateRequest, rows: Rows, fields: dict[str, Any],
                 callback: Any) -> Any:
    """SFTTrainer over pre-tokenized rows (``skip_prepare_dataset``), with its own collator, a
    word-level tokenizer over the model's vocabulary standing in for the model's (no download)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**fields, gradient_checkpointing=bool(req.gradient_checkpointing),
                     dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"].tolist()} for r in rows])
    return SFTTrainer(**_trl_model(base, req), args=args, train_dataset=dataset, processing_class=_tokenizer(rows),
                      callbacks=[callback])


def _dpo_trainer(base: PreTrainedModel, req: EstimateRequest, rows: Rows, fields: dict[str, Any],
                 callback: Any) -> Any:
    """DPOTrainer over text pairs its own tokenization reads back as the rows: each row's first
    half the prompt, its second the chosen completion (its last token the end of sequence DPOTrainer
    appends), the rejected one the same words reversed, so that every sequence is ``seq_len`` tokens.
    The reference copy of full fine-tuning is the one it would load (``reference_model``: a random
    model has no path to load it from)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**fields, gradient_checkpointing=bool(req.gradient_checkpointing), max_length=None,
                     pad_to_multiple_of=None)
    prompt = req.seq_len // 2
    pairs = []
    for r in rows:
        words = [f"t{int(i)}" for i in r["input_ids"]]
        completion = words[prompt:-1]
        pairs.append({"prompt": " ".join(words[:prompt]) + " ", "chosen": " ".join(completion) + " ",
                      "rejected": " ".join(reversed(completion)) + " "})
    return DPOTrainer(**_trl_model(base, req), ref_model=reference_model(req, torch.device("cpu")), args=args,
                      train_dataset=Dataset.from_list(pairs), processing_class=_tokenizer(rows), callbacks=[callback])


def _tokenizer(rows: Rows) -> Any:
    """A word-level tokenizer (words split at spaces) whose ids cover the rows': ``t<id>`` is token
    ``id``; its pad and end-of-sequence token is ``t0``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = 1 + max(int(r["input_ids"].max()) for r in rows)
    tokenizer = Tokenizer(WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="t0", eos_token="t0")


def _measure(request: EstimateRequest, steps: int, make_trainer: TrainerFactory, framework: str) -> dict[str, Any]:
    from transformers import TrainerCallback

    req, _ = normalize(request)
    if req.method == "inference" or req.device != "cpu":
        raise BuildError(f"the {framework} measurement trains on CPU")
    if req.optimizer not in TRAINER_OPTIMIZERS:
        raise BuildError(f"{framework} has no optimizer for {req.optimizer!r}")
    if req.loop != "trainer":
        raise BuildError(f"{framework} runs its own loop (--loop trainer)")
    device = torch.device("cpu")
    prediction = to_document(estimate(req))
    started = time.perf_counter()
    torch.manual_seed(0)
    base = load_model(req, device)
    vocab = vocab_size(base)
    rows = [{"input_ids": ids, "labels": ids.clone()}
            for ids in torch.randint(0, vocab, (steps * req.grad_accum * req.batch_size, req.seq_len))]
    peaks: list[dict[str, Any]] = []

    class StepPeaks(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            counter.begin()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            peaks.append(counter.end("step", state.global_step))

    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(base, req, rows, _arguments(req, steps, out), StepPeaks())
        model = trainer.model  # with the adapters the trainer added
        counter = Counter(device, model)
        if getattr(trainer, "ref_model", None) is not None:  # DPO's frozen copy, built with the trainer
            counter.track_model(trainer.ref_model)
        with counter:
            trainer.train()
    steady = [p for p in peaks if p["step"] >= 2] or peaks
    return {
        "request": prediction["request"],
        "prediction": prediction,
        "measured": {"counter": COUNTER.format(framework), "timeline": peaks, "peak_allocated_bytes": max(
            p["peak_allocated_bytes"] for p in steady), "framework": framework},
        "trainable_params": _trainable(model),
        "steps": steps,
        "environment": environment(device),
        "duration_s": round(time.perf_counter() - started, 3),
    }
