"""The JSON document of an estimate: the stable contract shared by the CLI and the REST API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .advice import verdict, verdict_document
from .estimate import Estimate
from .hardware import fit_rows
from .request import EstimateRequest, model_source, request_fields, request_from_fields
from .units import GIB


def request_document(est: Estimate) -> dict[str, Any]:
    """The document's ``request`` part: :func:`request.request_fields` of the estimate's request."""
    return request_fields(est.request, est.arch.config)


def request_from_document(doc: dict[str, Any]) -> EstimateRequest:
    """The request a document's ``request`` part describes (the inverse of :func:`request_document`),
    so stored measurements can be estimated again by a newer estimator."""
    return request_from_fields(doc)


def fits_document(peak_bytes: int, gpu_ids: list[str] | None) -> list[dict[str, Any]]:
    """``{gpu, fits, headroom_bytes}`` per GPU: :func:`hardware.fit_rows`, what ``fit_table`` holds."""
    return fit_rows(peak_bytes, gpu_ids)


def to_document(est: Estimate, gpu_ids: list[str] | None = None) -> dict[str, Any]:
    """Keys: params, paper, breakdown, peak_allocated_bytes, peak_bytes, peak_phase, fits, ...;
    for the GPUs named (``gpu_ids``, else the request's ``gpu``) the verdict first: ``verdicts``
    (:func:`advice.verdict`: fits or not, by how much, the largest batch and sequence, the changes
    that would make it fit)."""
    ids = gpu_ids if gpu_ids is not None else ([est.request.gpu] if est.request.gpu else None)
    return {
        "verdicts": [verdict_document(verdict(est, g)) for g in ids or ()],
        "estimator_version": est.estimator_version,
        "request": request_document(est),
        "params": {
            "total": est.total_params,
            "trainable": est.trainable_params,
            "trainable_percent": round(est.trainable_percent, 6),
        },
        "paper": {
            "formula": est.paper.formula,
            "bytes": est.paper.bytes,
            "lora_ratio": est.lora_ratio,
            "nf4_constant_bits_per_param": est.nf4_constant_bits,
        },
        "breakdown": dict(est.breakdown),
        "phases": [{"phase": p.name, "allocated_bytes": p.allocated_bytes, "terms": dict(p.terms)} for p in est.phases],
        "peak_allocated_bytes": est.peak_allocated_bytes,
        "peak_bytes": est.peak_bytes,
        "peak_gib": round(est.peak_bytes / GIB, 3),
        "peak_phase": est.peak_phase,
        "paged_optimizer_bytes": est.paged_optimizer_bytes,
        "fits": fits_document(est.peak_bytes, ids),
        "assumptions": list(est.assumptions),
        "model_source": source_document(est.request.model, est.total_params),
    }


def source_document(model: Any, estimated_params: int) -> dict[str, Any] | None:
    """Where the model's config came from (:func:`request.model_source`), with the checkpoint's
    parameter count beside the estimate's and, where they differ, a note saying by how much."""
    source = model_source(model)
    if source is None:
        return None
    checkpoint = source.get("checkpoint")
    stored = checkpoint.get("params") if isinstance(checkpoint, Mapping) else None
    return {**source, "estimated_params": estimated_params,
            "params_note": params_note(stored if isinstance(stored, int) else None, estimated_params)}


def params_note(checkpoint_params: int | None, estimated_params: int) -> str | None:
    """None where the checkpoint's stored parameters and the estimate's count agree; else how they
    differ (a multimodal checkpoint holding towers the causal LM does not build, a config that does
    not describe its weights), or that there was no checkpoint to check against."""
    if checkpoint_params is None:
        return "no safetensors weights to check the parameter count against"
    if checkpoint_params == estimated_params:
        return None
    delta = estimated_params - checkpoint_params
    return (f"the checkpoint stores {checkpoint_params:,} parameters, the estimate counts {estimated_params:,} "
            f"({delta:+,}, {delta / checkpoint_params:+.2%}): the model AutoModelForCausalLM builds from the config")
