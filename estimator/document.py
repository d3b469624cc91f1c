"""The JSON document of an estimate: the stable contract shared by the CLI and the REST API."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .adapters import LoraSpec
from .catalog import get_gpu, gpus
from .estimate import Estimate
from .quant import QuantSpec
from .request import EstimateRequest
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
    }


def request_from_document(doc: dict[str, Any]) -> EstimateRequest:
    """The request a document's ``request`` part describes (the inverse of :func:`request_document`),
    so stored measurements can be estimated again by a newer estimator."""
    lora = doc.get("lora")
    quant = doc.get("quant")
    targets = lora["target_modules"] if lora else None
    return EstimateRequest(
        model=doc["model"],
        method=doc["method"],
        dtype=doc["dtype"],
        lora=LoraSpec(r=lora["r"], alpha=lora["alpha"], variant=lora["variant"], dropout=lora["dropout"],
                      loraplus_lr_ratio=lora["loraplus_lr_ratio"],
                      target_modules=targets if isinstance(targets, str) else tuple(targets)) if lora else LoraSpec(),
        quant=QuantSpec(quant["type"], quant["double_quant"], quant["blocksize"]) if quant else None,
        batch_size=doc["batch_size"],
        seq_len=doc["seq_len"],
        gradient_checkpointing=doc["gradient_checkpointing"],
        optimizer=doc["optimizer"],
        attn_implementation=doc["attn_implementation"],
        device=doc["device"],
        gpu=doc["gpu"],
        num_gpus=doc["num_gpus"],
        sharding=doc["sharding"],
    )


def _lora(lora: LoraSpec) -> dict[str, Any]:
    targets = lora.target_modules
    return {"r": lora.r, "alpha": lora.alpha, "target_modules": targets if isinstance(targets, str) else list(targets),
            "variant": lora.variant, "dropout": lora.dropout, "loraplus_lr_ratio": lora.loraplus_lr_ratio}


def _quant(quant: QuantSpec) -> dict[str, Any]:
    return {"type": quant.type, "double_quant": quant.double_quant, "blocksize": quant.blocksize}


def fits_document(peak_bytes: int, gpu_ids: list[str] | None) -> list[dict[str, Any]]:
    """``{gpu, fits, headroom_bytes}`` per GPU (built directly: this runs on every API call)."""
    table = [(g, get_gpu(g).usable_bytes) for g in gpu_ids] if gpu_ids else _usable_bytes()
    return [{"gpu": g, "fits": usable >= peak_bytes, "headroom_bytes": usable - peak_bytes} for g, usable in table]


@lru_cache(maxsize=1)
def _usable_bytes() -> tuple[tuple[str, int], ...]:
    return tuple((g.id, g.usable_bytes) for g in gpus().values())


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
        "fits": fits_document(est.peak_bytes, ids),
        "assumptions": list(est.assumptions),
    }
