"""The JSON document of an estimate: the stable contract shared by the CLI and the REST API."""

from __future__ import annotations

from typing import Any

from .adapters import LoraSpec
from .estimate import Estimate
from .hardware import fit_rows
from .quant import QuantSpec
from .request import EstimateRequest, request_from_fields
from .units import GIB


def request_document(est: Estimate) -> dict[str, Any]:
    req = est.request
    model = req.model if isinstance(req.model, str) else {"config": dict(est.arch.config)}
    return {
        "model": model,
        "method": req.method,
        "dtype": req.dtype,
        "lora": _lora(req.lora) if req.method in ("lora", "qlora") else None,
        "quant": _quant(req.quant) if req.quant and req.quant.enabled else None,
        "batch_size": req.batch_size,
        "seq_len": req.seq_len,
        "gradient_checkpointing": req.gradient_checkpointing,
        "optimizer": req.optimizer,
        "attn_implementation": req.attn_implementation,
        "device": req.device,
        "gpu": req.gpu,
        "num_gpus": req.num_gpus,
        "sharding": req.sharding,
        "prepare_kbit": req.prepare_kbit,
        "loop": req.loop,
        "grad_accum": req.grad_accum,
        "autocast": req.autocast,
        "loss": req.loss,
        "objective": req.objective,
        "adapter_dtype": req.adapter_dtype,
        "inference_mode": req.inference_mode,
        "new_tokens": req.new_tokens,
        "recipe": req.recipe,
        "recipe_exceptions": dict(req.recipe_exceptions),
    }


def request_from_document(doc: dict[str, Any]) -> EstimateRequest:
    """The request a document's ``request`` part describes (the inverse of :func:`request_document`),
    so stored measurements can be estimated again by a newer estimator."""
    return request_from_fields(doc)


def _lora(lora: LoraSpec) -> dict[str, Any]:
    targets = lora.target_modules
    return {"r": lora.r, "alpha": lora.alpha, "target_modules": targets if isinstance(targets, str) else list(targets),
            "variant": lora.variant, "dropout": lora.dropout, "loraplus_lr_ratio": lora.loraplus_lr_ratio}


def _quant(quant: QuantSpec) -> dict[str, Any]:
    return {"type": quant.type, "double_quant": quant.double_quant, "blocksize": quant.blocksize}


def fits_document(peak_bytes: int, gpu_ids: list[str] | None) -> list[dict[str, Any]]:
    """``{gpu, fits, headroom_bytes}`` per GPU: :func:`hardware.fit_rows`, what ``fit_table`` holds."""
    return fit_rows(peak_bytes, gpu_ids)


def to_document(est: Estimate, gpu_ids: list[str] | None = None) -> dict[str, Any]:
    """Keys: params, paper, breakdown, peak_allocated_bytes, peak_bytes, peak_phase, fits, ...;
    for the GPUs named (``gpu_ids``, else the request's ``gpu``) the verdict first: ``verdicts``
    (:func:`advice.verdict`: fits or not, by how much, the largest batch and sequence, the changes
    that would make it fit)."""
    from .advice import verdict, verdict_document  # advice reads request_document: imported here, not above

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
    }
