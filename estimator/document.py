"""The JSON document of an estimate: the stable contract shared by the CLI and the REST API."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .estimate import Estimate
from .hardware import fit_table
from .units import GIB


def request_document(est: Estimate) -> dict[str, Any]:
    req = est.request
    model = req.model if isinstance(req.model, str) else {"config": dict(est.arch.config)}
    return {
        "model": model,
        "method": req.method,
        "dtype": req.dtype,
        "lora": {**asdict(req.lora), "target_modules": _targets(req.lora.target_modules)}
        if req.method in ("lora", "qlora") else None,
        "quant": asdict(req.quant) if req.quant and req.quant.enabled else None,
        "batch_size": req.batch_size,
        "seq_len": req.seq_len,
        "gradient_checkpointing": req.gradient_checkpointing,
        "optimizer": req.optimizer,
        "attn_implementation": req.attn_implementation,
        "device": req.device,
        "gpu": req.gpu,
        "num_gpus": req.num_gpus,
        "sharding": req.sharding,
    }


def _targets(targets):
    return targets if isinstance(targets, str) else list(targets)


def to_document(est: Estimate, gpu_ids: list[str] | None = None) -> dict[str, Any]:
    """Keys: params, paper, breakdown, peak_allocated_bytes, peak_bytes, peak_phase, fits, ..."""
    ids = gpu_ids if gpu_ids is not None else ([est.request.gpu] if est.request.gpu else None)
    return {
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
        "fits": [asdict(f) for f in fit_table(est.peak_bytes, ids)],
        "assumptions": list(est.assumptions),
    }
