"""The answer first: whether a plan fits a GPU and by how much, the largest micro-batch and the
longest sequence that fit it, and the changes that would make it fit, cheapest first.

Every number here is an estimate of a whole plan (:func:`estimate.estimate`): a suggestion is the
plan with one change, estimated again, never a rule of thumb.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .catalog import get_gpu
from .errors import EstimateError
from .estimate import Estimate, estimate
from .hardware import gpus_needed, max_batch_size, max_seq_len
from .request import EstimateRequest, request_fields, request_from_fields
from .units import GIB

# The phase of a step, as a sentence names it.
PHASE_WORDS = {"load": "loading", "forward": "the forward pass", "backward": "the backward pass",
               "optimizer_step": "the optimizer step", "prefill": "the prefill", "decode": "decoding"}
MAX_SUGGESTIONS = 5
# The GPUs a verdict is given for when the user names none: the consumer card and the two rented
# data-centre cards that fine-tuning guides name most.
COMMON_GPUS = ("rtx-4090", "a100-80gb", "h100-sxm-80gb")


@dataclass(frozen=True)
class Suggestion:
    """One change to a plan: the request fields it sets (as a request document spells them), in
    words, what it costs the run, and the changed plan's peak on the GPU."""

    change: dict[str, Any]
    label: str
    cost: str
    peak_bytes: int
    fits: bool


@dataclass(frozen=True)
class Verdict:
    """Whether a plan fits one GPU, by how much, and what would."""

    gpu: str
    name: str
    usable_bytes: int
    peak_bytes: int
    fits: bool
    headroom_bytes: int  # usable - peak: negative is the shortfall
    headroom_percent: float  # of the usable memory
    peak_phase: str
    max_batch_size: int  # at the plan's sequence length (training: the micro-batch)
    max_seq_len: int  # at the plan's batch size
    sentence: str
    suggestions: tuple[Suggestion, ...]
    explanations: tuple[str, ...]


def verdict(est: Estimate, gpu_id: str) -> Verdict:
    """The verdict on ``est``'s plan for GPU ``gpu_id``; where it does not fit, the changes that
    make it fit (:func:`suggestions`)."""
    gpu = get_gpu(gpu_id)
    req = est.request
    headroom = gpu.usable_bytes - est.peak_bytes
    fits = headroom >= 0
    batch = max_batch_size(req, gpu.id)
    seq = max_seq_len(req, gpu.id)
    return Verdict(
        gpu=gpu.id, name=gpu.name, usable_bytes=gpu.usable_bytes, peak_bytes=est.peak_bytes, fits=fits,
        headroom_bytes=headroom, headroom_percent=100 * headroom / gpu.usable_bytes, peak_phase=est.peak_phase,
        max_batch_size=batch, max_seq_len=seq, sentence=_sentence(est, gpu.name, gpu.usable_bytes, batch, seq),
        suggestions=() if fits else suggestions(est, gpu.id), explanations=explanations(est),
    )


def _gib(n: int) -> str:
    return f"{n / GIB:,.1f} GiB"


def _sentence(est: Estimate, name: str, usable: int, batch: int, seq: int) -> str:
    """One sentence a person can repeat: fits or not, by how much, where, and the largest batch."""
    return plan_sentence(est.request, est.peak_bytes, est.peak_phase, est.arch.max_position_embeddings, name,
                         usable, batch, seq)


def plan_sentence(req: EstimateRequest, peak: int, peak_phase: str, max_positions: int, name: str, usable: int,
                  batch: int, seq: int) -> str:
    """:func:`_sentence` of a plan given by its numbers (a simulated one's too)."""
    where = PHASE_WORDS.get(peak_phase, peak_phase)
    unit = "micro-batch" if req.method != "inference" else "batch"
    limit = " (the model's maximum)" if seq == max_positions else ""
    if peak <= usable:
        spare = usable - peak
        return (f"Fits an {name} ({_gib(usable)} usable): needs {_gib(peak)}, {_gib(spare)} "
                f"({100 * spare / usable:.0f} %) to spare, at its peak in {where}. Largest {unit} that fits: "
                f"{batch} (at {req.seq_len:,} tokens); longest sequence at {unit} {req.batch_size}: {seq:,} "
                f"tokens{limit}.")
    short = peak - usable
    largest = (f"Largest {unit} that fits: {batch}." if batch else
               f"No {unit} fits at {req.seq_len:,} tokens"
               + (f"; the longest sequence that fits at {unit} {req.batch_size}: {seq:,} tokens." if seq else "."))
    return (f"Does not fit an {name} ({_gib(usable)} usable): needs {_gib(peak)}, {_gib(short)} "
            f"({100 * short / usable:.0f} %) short, in {where}. " + largest)


def _changed(est: Estimate, change: dict[str, Any]) -> Estimate | None:
    """The plan with ``change`` applied (request document fields; None re-fills a field from the
    recipe or the library default), estimated; None where the changed plan is refused."""
    try:
        return estimate(request_from_fields({**request_fields(est.request, est.arch.config), **change}))
    except EstimateError:
        return None


# The kinds of change, in the order of how little each changes the run: first what changes neither
# the result nor the data (the loss in chunks, recomputation), then the batch's split, the
# optimizer's numerics, the data (shorter sequences), the model's precision or what trains, and
# last the hardware.
KINDS = ("loss", "checkpointing", "micro_batch", "batch", "optimizer_8bit", "paged_optimizer", "sequence", "qlora",
         "lora", "gpus")
Candidate = tuple[str, dict[str, Any], str, str]  # (kind, change, label, cost)


def _candidates(est: Estimate, gpu_id: str) -> list[Candidate]:
    """The changes worth trying on ``est``'s plan, in :data:`KINDS` order."""
    req = est.request
    training = req.method != "inference"
    out: list[Candidate] = []
    if training and req.loss == "standard" and req.objective == "sft":
        out.append(("loss", {"loss": "chunked"}, "score the loss in chunks (--loss chunked: TRL's fused LM head)",
                    "none to the result: the logits are never materialized"))
    if training and not req.gradient_checkpointing:
        out.append(("checkpointing", {"gradient_checkpointing": True}, "turn on gradient checkpointing",
                    "slower steps: each layer's forward runs again in backward (about a third more compute)"))
    if training and req.batch_size > 1:
        largest = max_batch_size(req, gpu_id)
        if 0 < largest < req.batch_size:
            effective = req.batch_size * req.grad_accum
            # the largest micro-batch that fits and splits the effective batch evenly
            micro = max(d for d in range(1, largest + 1) if effective % d == 0)
            accum = effective // micro
            out.append(("micro_batch", {"batch_size": micro, "grad_accum": accum},
                        f"micro-batch {micro} with {accum} accumulation steps",
                        f"the same effective batch ({effective}) in {accum} smaller forward/backward passes per "
                        "optimizer step"))
    if not training and req.batch_size > 1:
        largest = max_batch_size(req, gpu_id)
        if 0 < largest < req.batch_size:
            out.append(("batch", {"batch_size": largest}, f"batches of {largest}",
                        f"{req.batch_size} sequences in {math.ceil(req.batch_size / largest)} forward passes"))
    if training and req.optimizer in ("adamw", "adamw_fused"):
        out.append(("optimizer_8bit", {"optimizer": "adamw_8bit"}, "8-bit AdamW (bitsandbytes adamw_8bit)",
                    "optimizer states in 8 bits: a small numerical change"))
        if req.device == "cuda":
            out.append(("paged_optimizer", {"optimizer": "paged_adamw"}, "paged AdamW (bitsandbytes paged_adamw)",
                        "optimizer states in CUDA unified memory: slower steps while they are evicted to host RAM"))
    seq = max_seq_len(req, gpu_id)
    if 0 < seq < req.seq_len:
        out.append(("sequence", {"seq_len": seq}, f"sequences of {seq:,} tokens",
                    f"longer examples truncated or split: {req.seq_len - seq:,} tokens fewer each"))
    if req.method == "lora":
        out.append(("qlora", {"method": "qlora", "quant": None, "adapter_dtype": None}, "QLoRA instead of LoRA",
                    "the frozen base in 4-bit NF4 (Dettmers et al. 2023, QLoRA, arXiv:2305.14314): slower "
                    "matmuls, a small quality change"))
    if req.method == "full":
        out.append(("lora", {"method": "lora", "adapter_dtype": None}, "LoRA instead of full fine-tuning",
                    "only low-rank adapters train (Hu et al. 2021, LoRA, arXiv:2106.09685)"))
    if training and req.sharding == "none":
        n = gpus_needed(req, gpu_id, "zero3")
        if n is not None and n > 1:
            out.append(("gpus", {"num_gpus": n, "sharding": "zero3"}, f"{n} GPUs with ZeRO-3 (or FSDP full sharding)",
                        f"{n} GPUs instead of one, and their interconnect's traffic"))
    return out


def suggestions(est: Estimate, gpu_id: str) -> tuple[Suggestion, ...]:
    """The changes that make ``est``'s plan fit ``gpu_id``, cheapest first: each single change
    (:func:`_candidates`) estimated again, those that still do not fit left out, and the cheapest
    changes together (:func:`_combined`), ranked by the costliest change each makes (:data:`KINDS`)."""
    usable = get_gpu(gpu_id).usable_bytes
    ranked: list[tuple[int, int, Suggestion]] = []
    for kind, change, label, cost in _candidates(est, gpu_id):
        changed = _changed(est, change)
        if changed is not None and changed.peak_bytes <= usable:
            ranked.append((KINDS.index(kind), 1, Suggestion(change, label, cost, changed.peak_bytes, True)))
    combined = _combined(est, gpu_id, usable)
    if combined is not None and combined[1] > 1:
        ranked.append(combined)
    ranked.sort(key=lambda r: (r[0], r[1]))
    return tuple(s for _, _, s in ranked[:MAX_SUGGESTIONS])


MAX_COMBINED = 4  # changes at most in one combined suggestion


def _combined(est: Estimate, gpu_id: str, usable: int) -> tuple[int, int, Suggestion] | None:
    """(rank, how many changes, the suggestion): the cheapest changes applied one after another,
    each the first of the changed plan's candidates that lowers its peak, until the plan fits
    (None when :data:`MAX_COMBINED` do not); then without each change the others fit without."""
    current, steps = est, []
    for _ in range(MAX_COMBINED):
        step = next(((kind, c, label, cost) for kind, c, label, cost in _candidates(current, gpu_id)
                     if (changed := _changed(current, c)) is not None and changed.peak_bytes < current.peak_bytes),
                    None)
        if step is None:
            return None
        steps.append(step)
        current = _changed(est, _merged(steps)) or current
        if current.peak_bytes <= usable:
            break
    else:
        return None
    for step in list(steps[:-1]):
        fewer = [s for s in steps if s is not step]
        lighter = _changed(est, _merged(fewer))
        if lighter is not None and lighter.peak_bytes <= usable:
            steps, current = fewer, lighter
    suggestion = Suggestion(_merged(steps), " + ".join(s[2] for s in steps), "; ".join(s[3] for s in steps),
                            current.peak_bytes, True)
    return max(KINDS.index(s[0]) for s in steps), len(steps), suggestion


def _merged(steps: list[Candidate]) -> dict[str, Any]:
    return {key: value for step in steps for key, value in step[1].items()}


# A term that takes at least this share of the peak is named as the reason for it.
DOMINANT_SHARE = 0.4


def explanations(est: Estimate) -> tuple[str, ...]:
    """One line for what would surprise: a term that dominates the peak, and why, and what to do."""
    peak = est.peak_allocated_bytes
    terms = est.breakdown
    out = []
    logits = terms.get("logits_bytes", 0)
    if peak and logits >= DOMINANT_SHARE * peak:
        out.append(f"The logits take {100 * logits / peak:.0f} % of the peak: batch x sequence x a "
                   f"{est.arch.vocab_size:,}-token vocabulary, kept with their fp32 copy for the loss. A chunked loss "
                   "(--loss chunked) never materializes them.")
    activations = terms.get("activations_bytes", 0)
    if peak and activations >= DOMINANT_SHARE * peak:
        how = ("gradient checkpointing keeps one layer's at a time" if not est.request.gradient_checkpointing else
               "they grow with batch x sequence: a smaller micro-batch with accumulation shrinks them")
        out.append(f"Activations take {100 * activations / peak:.0f} % of the peak: {how}.")
    if est.request.method == "qlora" and est.request.prepare_kbit:
        lora = _changed(est, {"method": "lora", "quant": None, "adapter_dtype": None, "prepare_kbit": None})
        if lora is not None and lora.peak_bytes <= est.peak_bytes:
            out.append(f"QLoRA needs more than LoRA here ({_gib(est.peak_bytes)} vs {_gib(lora.peak_bytes)}): peft's "
                       "prepare_model_for_kbit_training casts the norms, embeddings and lm_head to fp32, so the "
                       "residual stream and the logits are fp32 while LoRA's stay 16-bit. --no-prepare-kbit keeps "
                       "them in the compute dtype.")
    return tuple(out)


def verdict_document(v: Verdict) -> dict[str, Any]:
    """A verdict as JSON (the estimate document's ``verdicts``)."""
    return {
        "gpu": v.gpu, "name": v.name, "usable_bytes": v.usable_bytes, "peak_bytes": v.peak_bytes, "fits": v.fits,
        "headroom_bytes": v.headroom_bytes, "headroom_percent": round(v.headroom_percent, 2),
        "peak_phase": v.peak_phase, "max_batch_size": v.max_batch_size, "max_seq_len": v.max_seq_len,
        "sentence": v.sentence, "explanations": list(v.explanations),
        "suggestions": [{"change": s.change, "label": s.label, "cost": s.cost, "peak_bytes": s.peak_bytes,
                         "fits": s.fits} for s in v.suggestions],
    }
