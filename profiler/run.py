"""One measurement: build the model as the request says, run its steps, record peak memory.

Training runs ``steps`` steps (default 3) on synthetic tokens; step one allocates the optimizer
state inside its window, steps two onwards are the steady state the estimator models. Every
phase (forward, backward, optimizer step; prefill for inference) gets its peak and the bytes
alive at its end. Each step runs the request's recipe: ``grad_accum`` micro-batches before the
optimizer step, in its loop (``_train``), under its autocast (``autocast_forward``). Hygiene as
torchtune's ``training/memory.py``: gc (and ``empty_cache`` on CUDA)
before each reading, peak statistics reset at each phase start, the model in train mode.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from tunefit.estimator import EstimateRequest, estimate, to_document
from tunefit.estimator.request import normalize

from .accounting import CudaCounters, LiveTensorBytes, Workspace, collect, model_tensors
from .build import BuildError, load_model, make_optimizer, prepare_for_training, reference_model, vocab_size
from .device import driver_version, physical_memory_bytes, versions

Progress = Callable[[str, int, int], None]
DEFAULT_STEPS = 3
CPU_COUNTER = "live tensor storage bytes (TorchDispatchMode, exact on CPU)"
CUDA_COUNTER = "torch.cuda.max_memory_allocated (reserved and NVML used recorded beside it)"
MEASURED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes")  # whose allocations are measured


class Counter:
    """One interface over the CPU and CUDA counters: reset at a phase start, read at its end."""

    def __init__(self, device: torch.device, model: torch.nn.Module, also_count: tuple[str, ...] = (),
                 workspace: Workspace | None = None, meter: type[LiveTensorBytes] = LiveTensorBytes) -> None:
        """``also_count``: further device types whose tensors count (a simulation targeting the
        CPU counts the host tensors torch keeps beside the meta ones, e.g. optimizer step counts);
        ``workspace``: kernel-internal bytes a simulation adds (see ``LiveTensorBytes``); ``meter``:
        the tensor accounting off CUDA (a fit's keeps every moment, ``profiler.generic``)."""
        self.device = device
        self.meter: CudaCounters | LiveTensorBytes
        if device.type == "cuda":
            self.meter = CudaCounters(device)
        else:
            self.meter = meter((device.type, *also_count), workspace)
            self.meter.track_all(model_tensors(model))

    def track_model(self, model: torch.nn.Module) -> None:
        """Count another model's tensors from the start (DPO's frozen reference)."""
        if isinstance(self.meter, LiveTensorBytes):
            self.meter.track_all(model_tensors(model))

    def __enter__(self) -> Counter:
        if isinstance(self.meter, LiveTensorBytes):
            self.meter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.meter, LiveTensorBytes):
            self.meter.__exit__(*exc)

    def begin(self) -> None:
        collect()
        self.meter.reset_peak()

    def end(self, phase: str, step: int) -> dict[str, Any]:
        if isinstance(self.meter, LiveTensorBytes):
            peak = self.meter.peak_bytes  # before gc: the peak already happened
            collect()
            return {"phase": phase, "step": step, "peak_allocated_bytes": peak,
                    "allocated_bytes": self.meter.current_bytes}
        reading = self.meter.reading()
        collect()
        return {"phase": phase, "step": step, **reading}

    @property
    def name(self) -> str:
        return CUDA_COUNTER if isinstance(self.meter, CudaCounters) else CPU_COUNTER


def _device(request: EstimateRequest) -> torch.device:
    if request.device == "cuda":
        if not torch.cuda.is_available():
            raise BuildError("device 'cuda' requested but this machine has no CUDA device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def measure(request: EstimateRequest, steps: int = DEFAULT_STEPS, progress: Progress | None = None,
            allow_hub: bool = False) -> dict[str, Any]:
    """Measure ``request`` for real; the result sits next to the estimator's prediction."""
    report = progress or (lambda phase, step, total: None)
    req, _ = normalize(request)
    prediction = to_document(estimate(req))
    device = _device(req)
    started = time.perf_counter()
    torch.manual_seed(0)
    report("load", 0, steps)
    base = load_model(req, device, allow_hub)
    training = req.method != "inference"
    model = prepare_for_training(base, req) if training else base.eval()
    optimizer = make_optimizer(model, req) if training else None
    reference = reference_model(req, device)
    counter = Counter(device, model)
    if reference is not None:
        counter.track_model(reference)
    with counter:
        load, readings = run_phases(model, optimizer, counter, req, vocab_size(base), steps, device, report,
                                    reference)
    return {
        "request": prediction["request"],
        "prediction": prediction,
        "measured": summarize(load, readings, counter.name),
        "trainable_params": _trainable(model),
        "steps": steps if training else 1,
        "environment": environment(device),
        "duration_s": round(time.perf_counter() - started, 3),
    }


def run_phases(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, counter: Counter,
               req: EstimateRequest, vocab: int, steps: int, device: torch.device,
               report: Progress, reference: torch.nn.Module | None = None
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The load reading, then the readings of every training step (or of the prefill), with
    ``counter`` active; token ids are drawn from ``vocab``; ``reference``: DPO's frozen copy."""
    counter.begin()
    load = counter.end("load", 0)
    if optimizer is not None:
        loss_of = _dpo_step(model, req, device, reference) if req.objective == "dpo" else None
        return load, _train(model, optimizer, counter, req, vocab, steps, device, report, loss_of)
    return load, _prefill(model, counter, req, vocab, device, report)


def _tokens(req: EstimateRequest, vocab: int, device: torch.device) -> torch.Tensor:
    return torch.randint(0, vocab, (req.batch_size, req.seq_len), device=device)


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, counter: Counter, req: EstimateRequest,
           vocab: int, steps: int, device: torch.device, report: Progress,
           loss_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """``steps`` optimizer steps of ``req.grad_accum`` micro-batches each, in the request's loop:
    ``trainer`` keeps only the loss (Hugging Face Trainer's ``compute_loss``); ``plain`` keeps the
    output, rebound only when the next forward returns (``outputs = model(**batch)``). ``loss_of``
    (DPO's, :func:`_dpo_step`) takes a micro-batch of token ids to its loss instead."""
    readings: list[dict[str, Any]] = []
    outputs = None
    forward = autocast_forward(model, req, device)
    # the chunked loss runs TRL's fused head (build.add_loss_head), asked for as its trainers ask
    head = {"fused_lm_head": True} if req.loss == "chunked" else {}
    scaler = torch.amp.GradScaler(device.type) if req.autocast == "fp16" else None
    for step in range(1, steps + 1):
        for _ in range(req.grad_accum):
            ids = _tokens(req, vocab, device)
            report("forward", step, steps)
            counter.begin()
            if loss_of is not None:
                loss = loss_of(torch.cat([ids, _tokens(req, vocab, device)]))  # chosen rows, then rejected
            elif req.loop == "plain":
                outputs = forward(input_ids=ids, labels=ids, use_cache=False, **head)
                loss = outputs.loss
            else:
                loss = forward(input_ids=ids, labels=ids, use_cache=False, **head).loss
            readings.append(counter.end("forward", step))
            report("backward", step, steps)
            counter.begin()
            (loss if scaler is None else scaler.scale(loss)).backward()
            del loss
            readings.append(counter.end("backward", step))
        report("optimizer_step", step, steps)
        counter.begin()
        if scaler is None:
            optimizer.step()
        else:  # fp16: accelerate's GradScaler unscales the gradients in place, skips a step with inf / nan
            scaler.step(optimizer)
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        readings.append(counter.end("optimizer_step", step))
    del outputs
    return readings


DPO_BETA = 0.1  # DPOConfig's beta; any value: memory does not depend on it


def _dpo_step(model: torch.nn.Module, req: EstimateRequest, device: torch.device,
              reference: torch.nn.Module | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """DPO's loss written after TRL's (trl 1.16 ``DPOTrainer._compute_loss``, its default sigmoid
    loss): the policy scores the chosen and the rejected rows through its fused head, then, under
    ``no_grad`` with the policy's output still held, the reference does (the policy with its
    adapters disabled, or the frozen copy), both under the recipe's autocast."""
    policy = autocast_forward(model, req, device)
    frozen = autocast_forward(reference if reference is not None else model, req, device)

    def loss_of(ids: torch.Tensor) -> torch.Tensor:
        outputs = policy(input_ids=ids, labels=ids, use_cache=False, fused_lm_head=True)
        logps = outputs.log_probs.sum(dim=1)
        adapters_off = _without_adapters(model) if reference is None else contextlib.nullcontext()
        with torch.no_grad(), adapters_off:
            ref_logps = frozen(input_ids=ids, labels=ids, use_cache=False, fused_lm_head=True).log_probs.sum(dim=1)
        chosen, rejected = (logps - ref_logps).chunk(2)
        return -torch.nn.functional.logsigmoid(DPO_BETA * (chosen - rejected)).mean()

    return loss_of


def _without_adapters(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """peft's ``PeftModel.disable_adapter()``: the reference of adapters is the model without them."""
    from peft import PeftModel

    assert isinstance(model, PeftModel)  # prepare_for_training wrapped it for lora / qlora
    return model.disable_adapter()


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_forward(model: torch.nn.Module, req: EstimateRequest, device: torch.device) -> Callable[..., Any]:
    """The model's forward as the request's recipe calls it: under ``torch.autocast`` with its
    outputs converted to fp32 after, as accelerate wraps a prepared model's forward for mixed
    precision (accelerate 1.15 ``Accelerator.prepare_model``: ``convert_outputs_to_fp32(autocast_context(
    forward))``), or the model itself."""
    if req.autocast == "none":
        return model
    from accelerate.utils.operations import convert_to_fp32

    dtype = AUTOCAST_DTYPES[req.autocast]

    def forward(**batch: Any) -> Any:
        with torch.autocast(device_type=device.type, dtype=dtype):
            outputs = model(**batch)
        return convert_to_fp32(outputs)

    return forward


def _prefill(model: torch.nn.Module, counter: Counter, req: EstimateRequest, vocab: int, device: torch.device,
             report: Progress) -> list[dict[str, Any]]:
    """The request's inference: ``generate()``'s prefill (``use_cache=True``, the last position's
    logits) and, with ``new_tokens``, its decoding (each phase read on its own); or an evaluation
    forward with labels (``model(input_ids, labels=input_ids)``, the config's ``use_cache``), under
    ``no_grad``."""
    ids = _tokens(req, vocab, device)
    if req.new_tokens:
        return _generate(model, counter, req, ids, report)
    phase = "forward" if req.inference_mode == "forward" else "prefill"
    report(phase, 1, 1)
    with torch.no_grad():
        counter.begin()
        if req.inference_mode == "forward":
            out = model(input_ids=ids, labels=ids)
        else:
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)  # as generate() prefills
        reading = counter.end(phase, 1)
    del out
    return [reading]


def _generate(model: torch.nn.Module, counter: Counter, req: EstimateRequest, ids: torch.Tensor,
              report: Progress) -> list[dict[str, Any]]:
    """``generate()`` of ``new_tokens`` greedy tokens, every one decoded (no end of sequence stops
    it): the prefill is read until its token is chosen (the first stopping check), the decoding
    after it."""
    from transformers import PreTrainedModel, StoppingCriteria, StoppingCriteriaList

    assert isinstance(model, PreTrainedModel)  # a causal LM
    readings: list[dict[str, Any]] = []

    class PhaseEnd(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            if not readings:
                readings.append(counter.end("prefill", 1))
                report("decode", 1, 1)
                counter.begin()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    report("prefill", 1, 1)
    with torch.no_grad():
        counter.begin()
        # transformers 5.23 annotates generate() for its own GenerativePreTrainedModel protocol
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),  # type: ignore[operator]
                             max_new_tokens=req.new_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0,
                             stopping_criteria=StoppingCriteriaList([PhaseEnd()]))
        if req.new_tokens > 1:
            readings.append(counter.end("decode", 1))
    del out
    return readings


def summarize(load: dict[str, Any], readings: list[dict[str, Any]], counter: str) -> dict[str, Any]:
    """Per-phase peaks of the steady state (step two onwards when there is one), the overall peak."""
    last_step = max(r["step"] for r in readings)
    steady = [r for r in readings if r["step"] >= 2] or readings
    phases: dict[str, int] = {"load": load["peak_allocated_bytes"]}
    for r in steady:
        phases[r["phase"]] = max(phases.get(r["phase"], 0), r["peak_allocated_bytes"])
    peak_phase = max(phases, key=lambda name: phases[name])
    first_step = [r for r in readings if r["step"] == 1]
    return {
        "counter": counter,
        "load": load,
        "timeline": readings,
        "steady_state_steps": sorted({r["step"] for r in steady}),
        "phase_peaks": phases,
        "peak_allocated_bytes": phases[peak_phase],
        "peak_phase": peak_phase,
        "first_step_peak_allocated_bytes": max(r["peak_allocated_bytes"] for r in first_step),
        "last_step": last_step,
    }


def _trainable(model: torch.nn.Module) -> dict[str, int]:
    """What the running model reports; peft counts a 4-bit parameter twice (it packs two per byte)."""
    peft_counts = getattr(model, "get_nb_trainable_parameters", None)
    if peft_counts is not None:
        trainable, total = peft_counts()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and the device, so a measurement can be reproduced and compared."""
    env: dict[str, Any] = {"device": device.type, **environment_versions(), "driver": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_memory_bytes=props.total_memory, driver=driver_version())
    else:
        env.update(device_name=platform.processor() or platform.machine(),
                   device_memory_bytes=physical_memory_bytes())
    return env


def environment_versions() -> dict[str, str | None]:
    """Python, the platform, the libraries whose allocations are measured and torch's CUDA build."""
    found = versions(MEASURED_PACKAGES)
    return {"python": found.pop("python"), "platform": platform.platform(), **found, "cuda": torch.version.cuda}
