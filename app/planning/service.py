"""Service functions: turn validated schemas into estimator calls and JSON documents.

Routes parse and render; everything in between happens here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from tunefit.app.core.checkpoints import read_config
from tunefit.app.planning.schemas import (
    CapacityIn,
    CheckpointModel,
    CompareIn,
    EstimateIn,
    SettingIn,
    VariantIn,
)
from tunefit.estimator import (
    Capacity,
    EstimateError,
    EstimateRequest,
    capacity,
    estimate,
    get_model,
    gpus,
    models,
    to_document,
)
from tunefit.estimator.document import request_document
from tunefit.estimator.request import REQUEST_FIELDS, request_from_fields
from tunefit.estimator.units import GIB

NO_VARIANT = VariantIn()
# The request fields a setting carries as they are (the others are assembled in ``to_request``).
SHARED_FIELDS = tuple(name for name in REQUEST_FIELDS
                      if name in SettingIn.model_fields and name not in ("model", "method", "lora", "quant", "recipe"))
# Methods whose base can be quantized: the others train an unquantized base.
QUANTIZED_METHODS = ("qlora", "inference")


class ConfigReadError(EstimateError):
    """A pasted ``config.json`` that the estimator cannot read."""


def _model_arg(body: SettingIn) -> Any:
    """What the estimator (and profiler) take as the model: an id, a config dict, or for a local
    checkpoint (its path already checked, see ``app.checkpoints``) both its path and its config."""
    if isinstance(body.model, str):
        return body.model
    if isinstance(body.model, CheckpointModel):
        directory = Path(body.model.checkpoint)
        return {"checkpoint": str(directory), "config": read_config(directory)}
    return dict(body.model.config)


def to_request(body: SettingIn, gpu: str | None = None, variant: VariantIn | None = None) -> EstimateRequest:
    """The estimator request for ``body`` (with a comparison column's changes applied), built by
    the estimator's one constructor. A quantization is kept only for the methods whose base can be
    quantized: a column that switches QLoRA to LoRA or full drops it."""
    v = variant or NO_VARIANT
    # the recipe's name as given ("none": the libraries' defaults, which request_from_fields reads as no recipe)
    recipe = body.recipe
    given, lora = _given(body, recipe), _given(body.lora, recipe)
    method = v.method or given["method"]
    quant = v.quant if v.quant is not None else body.quant
    return request_from_fields({
        **{name: given[name] for name in SHARED_FIELDS},
        "model": _model_arg(body), "method": method, "gpu": gpu, "recipe": recipe,
        "lora": {"r": v.r or lora["r"], "alpha": lora["alpha"] if v.r is None else None,
                 "target_modules": v.target_modules or lora["target_modules"],
                 "variant": v.variant or lora["variant"], "dropout": lora["dropout"]},
        # a model's __dict__ is its field values (model_dump's work, without the copy)
        "quant": quant.__dict__ if quant is not None and (method is None or method in QUANTIZED_METHODS) else None,
    })


def _given(schema: BaseModel, recipe: str | None) -> dict[str, Any]:
    """The schema's field values; under a ``recipe``, those the client left out are None, so the
    recipe's own fill them (a model's ``__dict__`` is its values, without a copy)."""
    values = schema.__dict__
    if recipe is None:
        return values
    return {k: (v if k in schema.model_fields_set else None) for k, v in values.items()}


def run_estimate(request: EstimateRequest):
    """``estimate(request)``; a pasted config that breaks the reader becomes a field error, never a crash."""
    try:
        return estimate(request)
    except EstimateError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, ZeroDivisionError) as exc:
        if isinstance(request.model, str):
            raise
        raise ConfigReadError("model.config", f"cannot be read as a transformer config: {exc}") from exc


def estimate_document(body: EstimateIn) -> dict[str, Any]:
    """``POST /api/v1/estimate``: the estimator's JSON document."""
    ids = body.gpu_ids
    return to_document(run_estimate(to_request(body, gpu=ids[0] if ids else None)), gpu_ids=ids)


def capacity_document(body: CapacityIn) -> dict[str, Any]:
    """``POST /api/v1/capacity``: fit, max batch, max sequence and GPUs needed per GPU."""
    request = to_request(body)
    est = run_estimate(request)
    rows = capacity(request, body.gpu_ids, sharding=body.multi_gpu)
    return {
        "estimator_version": est.estimator_version,
        "request": request_document(est),
        "peak_bytes": est.peak_bytes,
        "multi_gpu": body.multi_gpu,
        "rows": [capacity_row(r) for r in rows],
    }


def capacity_row(row: Capacity) -> dict[str, Any]:
    """The row's fields as JSON (``vars``: ``dataclasses.asdict`` deep-copies, 24 times a query)."""
    return dict(vars(row))


def variant_label(body: SettingIn, v: VariantIn) -> str:
    if v.label:
        return v.label
    method = v.method or body.method
    if method not in ("lora", "qlora"):
        return method
    variant = v.variant or body.lora.variant
    name = method if variant == "lora" else f"{method} ({variant})"
    return f"{name} r={v.r or body.lora.r}"


def compare_document(body: CompareIn) -> dict[str, Any]:
    """``POST /api/v1/compare``: one document per column, or the reason it cannot be estimated."""
    results = []
    for v in body.variants:
        label = variant_label(body, v)
        try:
            est = run_estimate(to_request(body, variant=v))
            results.append({"label": label, "document": to_document(est, gpu_ids=body.gpu_ids),
                            "error": None})
        except EstimateError as exc:
            results.append({"label": label, "document": None, "error": str(exc)})
    return {"results": results, **_config_once(results)}


def _config_once(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A pasted config echoed once: at the top (``config``), each column's request naming it by its
    SHA-256 (``{"config_sha256": ...}``). Every column shares it, and 16 copies of a large config
    made an answer 16 times its size."""
    config = next((r["document"]["request"]["model"]["config"] for r in results
                   if r["document"] and isinstance(r["document"]["request"]["model"], dict)), None)
    if config is None:
        return {"config": None, "config_sha256": None}
    digest = hashlib.sha256(orjson.dumps(config, option=orjson.OPT_SORT_KEYS)).hexdigest()
    for r in results:
        if r["document"]:
            r["document"]["request"]["model"] = {"config_sha256": digest}
    return {"config": config, "config_sha256": digest}


# ---- catalogs ----------------------------------------------------------------------------------


def model_summary(model_id: str, with_config: bool = False) -> dict[str, Any]:
    m = get_model(model_id)
    out = {
        "id": m.id, "name": m.name, "family": m.family, "model_type": m.arch.model_type, "hf_repo": m.hf_repo,
        "source": m.source, "params": m.arch.total_params, "linear_modules": list(m.arch.linear_names),
    }
    if with_config:
        out["config"] = dict(m.config)
    return out


def model_list() -> list[dict[str, Any]]:
    return [model_summary(model_id) for model_id in models()]


def gpu_list() -> list[dict[str, Any]]:
    return [
        {"id": g.id, "name": g.name, "vendor": g.vendor, "memory_bytes": g.memory_bytes,
         "memory_label": g.memory_label, "usable_bytes": g.usable_bytes,
         "usable_gib": round(g.usable_bytes / GIB, 3), "source": g.source}
        for g in gpus().values()
    ]
