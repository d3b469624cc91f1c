"""Simulate a training step of any size on the meta device.

The real transformers / peft / torch code runs (model, adapters, loss, backward, optimizer step),
but on ``torch.device("meta")``: tensors have shapes, dtypes and storages of their true size and
no memory or arithmetic behind them. The CPU profiler's tensor accounting (``LiveTensorBytes``,
keyed by storage identity, which meta storages have too) counts every storage the step would
allocate, op by op, and gives the same phase timeline and peak as a measurement, for a 70B model
in seconds on a laptop.

The ``target`` is the request's ``device`` (``cuda`` or ``cpu``): the simulation runs the target's
kernels where they allocate differently from meta's generic ones (``profiler.kernels``: fused
attention, CUDA's fused dropout) and builds the optimizer as torch would there (AdamW and SGD use
the foreach implementation on CUDA, per-tensor loops on CPU). QLoRA's 4-bit layers are stand-ins
that allocate what bitsandbytes allocates (``profiler.meta4bit``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from unittest.mock import patch

import torch

from tunefit.estimator import EstimateRequest, estimate, to_document
from tunefit.estimator.request import normalize

from .build import (
    TORCH_DTYPES,
    BuildError,
    make_optimizer,
    prepare_for_training,
    random_model,
    source_config,
    vocab_size,
)
from .kernels import TargetKernels, cuda_workspace_bytes
from .limits import simulation_refusal
from .run import Counter, Progress, _trainable, environment_versions, run_phases, summarize

if TYPE_CHECKING:
    from transformers import PreTrainedModel

META = torch.device("meta")
SIMULATED_STEPS = 2  # step one allocates the optimizer state; step two is the steady state
COUNTER = "simulated on the meta device: live tensor storage bytes (TorchDispatchMode), target {target}"


def simulate(request: EstimateRequest, steps: int = SIMULATED_STEPS, progress: Progress | None = None,
             allow_hub: bool = False) -> dict[str, Any]:
    """Simulate ``request`` on the meta device for its ``device`` as target; the result has the
    shape of :func:`profiler.measure`'s, with ``environment.device`` ``meta``."""
    report = progress or (lambda phase, step, total: None)
    req, _ = normalize(request)
    refusal = simulation_refusal(req)
    if refusal is not None:
        raise BuildError(refusal)
    prediction = to_document(estimate(req))
    started = time.perf_counter()
    try:
        return _simulate(req, steps, report, allow_hub, prediction, started)
    except (RuntimeError, NotImplementedError) as exc:  # an op without a meta implementation
        raise BuildError(f"cannot be simulated on the meta device: {type(exc).__name__}: {exc}") from exc


def _simulate(req: EstimateRequest, steps: int, report: Progress, allow_hub: bool, prediction: dict[str, Any],
              started: float) -> dict[str, Any]:
    target = req.device
    report("load", 0, steps)
    base = meta_model(req, allow_hub)
    training = req.method != "inference"
    model = prepare_for_training(base, req) if training else base.eval()
    optimizer = make_optimizer(model, req, foreach=target == "cuda") if training else None
    counter = Counter(META, model, also_count=("cpu",) if target == "cpu" else (),
                      workspace=cuda_workspace_bytes if target == "cuda" else None)
    kernels = TargetKernels(target)
    with meta_answers(), kernels, counter:
        load, readings = run_phases(model, optimizer, counter, req, vocab_size(base), steps, META, report)
    measured = summarize(load, readings, COUNTER.format(target=target))
    measured["attention_kernels"] = kernels.backends
    return {
        "request": prediction["request"],
        "prediction": prediction,
        "measured": measured,
        "trainable_params": _trainable(model),
        "steps": steps if training else 1,
        "environment": {"device": "meta", "target": target, "device_name": f"meta (target {target})",
                        **environment_versions()},
        "duration_s": round(time.perf_counter() - started, 3),
    }


@contextmanager
def meta_answers() -> Iterator[None]:
    """Answers to the two questions the libraries ask that the meta device cannot answer.

    - transformers asks the position ids whether several sequences are packed into one row, a
      question about values; the synthetic batch is never packed (positions 0..s-1 in every
      row), which is the answer given here.
    - peft's MoE ``ParamWrapper`` turns autocast off with ``torch.autocast(device_type=<the
      weight's device>)``, and autocast knows no ``meta`` type; turning it off for ``cpu``
      instead changes nothing (it is not on).
    """
    from transformers import masking_utils

    class Autocast(torch.autocast):
        def __init__(self, device_type: str, *args, **kwargs):
            super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)

    with patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None), \
            patch.object(torch, "autocast", Autocast):
        yield


def meta_model(req: EstimateRequest, allow_hub: bool = False) -> PreTrainedModel:
    """The base model on the meta device, built from its config (a local checkpoint's
    ``config.json`` is read; no weights are loaded), quantized by stand-ins for a 4-bit request."""
    config_dict, _ = source_config(req.model, allow_hub)
    with META:
        model = random_model(config_dict, dtype=TORCH_DTYPES[req.dtype], attn_implementation=req.attn_implementation)
    quant = req.quant
    if quant is not None and quant.enabled:
        from .meta4bit import quantize_on_meta

        quantize_on_meta(model, quant, TORCH_DTYPES[req.dtype])
    return model
