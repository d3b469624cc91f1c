"""Answers for a model the formulas do not know, from its own code: the step simulated on the meta
device and fitted in the batch size and the sequence length (``profiler.generic``, which needs the
``[profiler]`` extra), turned into the same documents an estimate gives, marked
``"source": "simulated"``.

Here the step is given by its numbers (:class:`SimulatedStep`: each phase's peak of allocated
bytes at any shape, read off the fit); the CUDA context and the allocator's slack are added as for
an estimate (:func:`estimate.runtime_terms`), and the fit is searched for the largest batch and
sequence that fit each GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .advice import plan_sentence
from .catalog import get_gpu
from .document import source_document
from .errors import EstimateError
from .estimate import ESTIMATOR_VERSION, runtime_terms
from .hardware import Capacity, fit_rows
from .paper import nf4_constant_bits, paper_figure
from .request import MAX_BATCH, ModelFacts, request_fields
from .units import DTYPE_BITS, GIB

PhasePeaks = Callable[[int, int], Mapping[str, int]]  # (b, s) -> each phase's peak of allocated bytes


@dataclass(frozen=True)
class SimulatedStep:
    """A setting's step as simulated: ``request`` normalized (:func:`request.normalize_simulated`),
    the model's ``facts``, ``phase_peaks`` and ``phase_ends`` (the bytes alive at the end of each
    phase: the load's are the weights and buffers, the optimizer step's the state kept between
    steps) at any shape up to ``max_seq_len`` where ``fitted``, else at the request's own shape
    alone, the parameters the built model reports, and how it was simulated (``how``: said in the
    assumptions and the document's ``simulation``)."""

    request: Any  # EstimateRequest (normalized)
    facts: ModelFacts
    phase_peaks: PhasePeaks
    phase_ends: PhasePeaks
    total_params: int
    trainable_params: int
    max_position_embeddings: int
    fitted: bool
    max_seq_len: int  # the fit holds up to here (a sliding window, the model's maximum)
    how: Mapping[str, Any] = field(default_factory=dict)

    def peak(self, b: int, s: int) -> tuple[str, int, int]:
        """(phase, allocated, on the device: with the CUDA context and the allocator's slack) at b x s."""
        peaks = self.phase_peaks(b, s)
        phase = max(peaks, key=lambda name: peaks[name])
        allocated = peaks[phase]
        return phase, allocated, allocated + sum(runtime_terms(self.request, allocated).values())


def simulated_document(step: SimulatedStep, gpu_ids: list[str] | None = None) -> dict[str, Any]:
    """The estimate document of a simulated step at its request's shape."""
    req = step.request
    phase, allocated, peak = step.peak(req.batch_size, req.seq_len)
    runtime = runtime_terms(req, allocated)
    phases, ends = step.phase_peaks(req.batch_size, req.seq_len), step.phase_ends(req.batch_size, req.seq_len)
    kept = ends.get("optimizer_step", ends["load"])
    return {
        "source": "simulated",
        "verdicts": [_verdict(step, g, phase, peak) for g in gpu_ids or ()],
        "estimator_version": ESTIMATOR_VERSION,
        "request": request_fields(req, step.facts.config),
        "params": {"total": step.total_params, "trainable": step.trainable_params,
                   "trainable_percent": round(100 * step.trainable_params / step.total_params, 6)},
        "paper": _paper(step),
        "breakdown": {"weights_bytes": ends["load"], "optimizer_bytes": kept - ends["load"],
                      "working_bytes": allocated - kept, **runtime},
        "phases": [{"phase": name, "allocated_bytes": value, "terms": {}} for name, value in phases.items()],
        "peak_allocated_bytes": allocated,
        "peak_bytes": peak,
        "peak_gib": round(peak / GIB, 3),
        "peak_phase": phase,
        "paged_optimizer_bytes": 0,
        "fits": fit_rows(peak, gpu_ids),
        "assumptions": assumptions(step),
        "model_source": source_document(req.model, step.total_params),
        "simulation": dict(step.how),
    }


def _paper(step: SimulatedStep) -> dict[str, Any]:
    """The seed paper's figure for the method, at the parameters the built model reports (the
    trainable ones as P_LoRA for adapters)."""
    req = step.request
    adapters = step.trainable_params if req.method in ("lora", "qlora") else 0
    base = step.total_params - adapters
    figure = paper_figure(req.method, base, adapters, DTYPE_BITS[req.dtype])
    four_bit = req.quant is not None and req.quant.is_4bit
    return {"formula": figure.formula, "bytes": figure.bytes, "lora_ratio": None,
            "nf4_constant_bits_per_param": nf4_constant_bits(req.quant.double_quant) if four_bit else None}


def assumptions(step: SimulatedStep) -> list[str]:
    req, facts = step.request, step.facts
    how = ("fitted: " + str(step.how.get("fit")) if step.fitted else
           "simulated at this shape alone: " + str(step.how.get("why")))
    notes = [f"{facts.model_type} has no formula here: the step is transformers' own code run on the meta device "
             f"(every tensor's size, no memory), {how}",
             "the meta device runs transformers' torch reference paths (no causal-conv1d, flash-linear-attention or "
             "mamba-ssm kernels, which need CUDA)",
             f"attention {req.attn_implementation}; the breakdown tells the weights, the state kept between steps "
             "(the optimizer's) and the rest at the peak (activations and working buffers) apart"]
    if req.method in ("lora", "qlora"):
        notes.append(facts.targets_note)
    if req.recipe is not None:
        notes += [f"recipe {req.recipe}'s {name} is not applied, so it stays at its library default "
                  f"({getattr(req, name)}): {why}" for name, why in req.recipe_exceptions]
    return notes


def largest_batch(step: SimulatedStep, usable: int, s: int) -> int:
    """The largest batch (up to the estimator's limit) whose peak fits ``usable`` at length ``s``."""
    return _largest(lambda b: step.peak(b, s)[2] <= usable, MAX_BATCH)


def longest_sequence(step: SimulatedStep, usable: int, b: int) -> int:
    """The longest sequence (up to where the fit holds) that fits ``usable`` at batch ``b``."""
    return _largest(lambda s: step.peak(b, s)[2] <= usable, step.max_seq_len)


def _largest(fits: Callable[[int], bool], upper: int) -> int:
    """The largest x in [1, upper] with fits(x) (0: none), peaks growing with x."""
    if not fits(1):
        return 0
    lo, hi = 1, upper + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _verdict(step: SimulatedStep, gpu_id: str, phase: str, peak: int) -> dict[str, Any]:
    """The verdict for one GPU, without suggestions (each would be another simulation)."""
    gpu, req = get_gpu(gpu_id), step.request
    batch = largest_batch(step, gpu.usable_bytes, req.seq_len) if step.fitted else 0
    seq = longest_sequence(step, gpu.usable_bytes, req.batch_size) if step.fitted else 0
    headroom = gpu.usable_bytes - peak
    sentence = plan_sentence(req, peak, phase, step.max_position_embeddings, gpu.name, gpu.usable_bytes, batch, seq)
    if not step.fitted:  # one shape simulated: no search for the largest
        sentence = sentence.partition(". ")[0] + ". Simulated at this shape alone: the largest batch and sequence " \
                                                 "are not searched."
    return {
        "gpu": gpu.id, "name": gpu.name, "usable_bytes": gpu.usable_bytes, "peak_bytes": peak, "fits": headroom >= 0,
        "headroom_bytes": headroom, "headroom_percent": round(100 * headroom / gpu.usable_bytes, 2),
        "peak_phase": phase, "max_batch_size": batch, "max_seq_len": seq, "sentence": sentence,
        "explanations": [], "suggestions": [],
    }


def simulated_capacity(step: SimulatedStep, gpu_ids: list[str] | None = None) -> list[Capacity]:
    """Capacity rows from the fit: fits, the largest batch and sequence; the GPUs needed are not
    simulated (sharding is not run on the meta device yet)."""
    req = step.request
    if not step.fitted:
        raise EstimateError("model", f"capacity searches many shapes, and {step.facts.model_type}'s simulation does "
                                     f"not fit ({step.how.get('why')}): ask for an estimate at each shape")
    _, _, peak = step.peak(req.batch_size, req.seq_len)
    rows = []
    for fit in fit_rows(peak, gpu_ids):
        gpu = get_gpu(fit["gpu"])
        rows.append(Capacity(
            gpu=gpu.id, name=gpu.name, usable_bytes=gpu.usable_bytes, fits=fit["fits"],
            headroom_bytes=fit["headroom_bytes"],
            max_batch_size=largest_batch(step, gpu.usable_bytes, req.seq_len),
            max_seq_len=longest_sequence(step, gpu.usable_bytes, req.batch_size), gpus_needed=None))
    return rows
