"""Service functions: turn validated schemas into estimator calls and JSON documents.

Routes parse and render; everything in between happens here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from tunefit.app.core.checkpoints import read_config
from tunefit.app.hub import resolver as hub
from tunefit.app.hub.ids import parse_hub_ref
from tunefit.app.planning.schemas import (
    CapacityIn,
    CheckpointModel,
    CompareIn,
    ConfigModel,
    EstimateIn,
    SettingIn,
    VariantIn,
)
from tunefit.estimator import (
    Capacity,
    EstimateError,
    EstimateRequest,
    arch_from_config,
    capacity,
    estimate,
    get_model,
    gpus,
    models,
    to_document,
)
from tunefit.estimator.arch import ArchSpec, formula_backed
from tunefit.estimator.document import request_document
from tunefit.estimator.peft_defaults import default_targets
from tunefit.estimator.request import REQUEST_FIELDS, request_from_fields
from tunefit.estimator.simulated import SimulatedStep, simulated_capacity, simulated_document
from tunefit.estimator.units import GIB
from tunefit.profiler.limits import transformers_model_types

NO_VARIANT = VariantIn()
Progress = Callable[[int, int], None]  # (shapes simulated, of how many)
# The request fields a setting carries as they are (the others are assembled in ``to_request``).
SHARED_FIELDS = tuple(name for name in REQUEST_FIELDS
                      if name in SettingIn.model_fields and name not in ("model", "method", "lora", "quant", "recipe"))
# Methods whose base can be quantized: the others train an unquantized base.
QUANTIZED_METHODS = ("qlora", "inference")


class ConfigReadError(EstimateError):
    """A pasted ``config.json`` that the estimator cannot read."""


def _model_arg(body: SettingIn) -> Any:
    """What the estimator (and profiler) take as the model: a catalog id, a config dict (a Hub id's
    with its ``source``, see ``app.hub``), or for a local checkpoint (its path already checked, see
    ``app.checkpoints``) both its path and its config."""
    if isinstance(body.model, str):
        return hub.active().model_arg(body.model, body.revision)
    if isinstance(body.model, CheckpointModel):
        directory = Path(body.model.checkpoint)
        return {"checkpoint": str(directory), "config": read_config(directory)}
    if body.model.source is not None:
        return {"config": dict(body.model.config), "source": body.model.source}
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
    return document_for(to_request(body, gpu=ids[0] if ids else None), ids)


def document_for(request: EstimateRequest, gpu_ids: list[str] | None, progress: Progress | None = None
                 ) -> dict[str, Any]:
    """The estimate document of ``request``: from the formulas, or for a model they do not know
    from its simulated step (``"source": "simulated"``)."""
    if not formula_backed(request.model):
        return simulated_document(simulated_step(request, progress), gpu_ids)
    return to_document(run_estimate(request), gpu_ids=gpu_ids)


def may_simulate(body: SettingIn) -> bool:
    """Whether answering ``body`` may simulate (seconds, not milliseconds): a pasted config of a
    model_type the formulas do not know. No network: a Hub id is told apart by its own check."""
    return isinstance(body.model, ConfigModel) and not formula_backed({"config": body.model.config})


def simulated_step(request: EstimateRequest, progress: Progress | None = None) -> SimulatedStep:
    """The fitted simulation of ``request`` (``profiler.generic``), or why there is none here: a
    model_type transformers does not know either is refused before torch is imported."""
    model_type = request.model.get("config", request.model).get("model_type")  # a pasted config, or with its source
    known = transformers_model_types()
    if known is not None and model_type not in known:
        raise EstimateError("config.model_type", f"unsupported model_type {model_type!r}: neither the formulas nor "
                                                 "the installed transformers know it")
    try:
        from tunefit.profiler.generic import simulated_step as simulate_step
    except ImportError as exc:
        raise EstimateError("config.model_type",
                            f"{model_type!r} has no formula here; answering it from transformers' own code (a "
                            "meta-device simulation) needs the profiler: pip install -e '.[profiler]'") from exc
    return simulate_step(request, progress)


def capacity_document(body: CapacityIn) -> dict[str, Any]:
    """``POST /api/v1/capacity``: fit, max batch, max sequence and GPUs needed per GPU."""
    request = to_request(body)
    if not formula_backed(request.model):
        step = simulated_step(request)
        doc = simulated_document(step)
        rows, version, peak = simulated_capacity(step, body.gpu_ids), doc["estimator_version"], doc["peak_bytes"]
        request_doc = doc["request"]
    else:
        est = run_estimate(request)
        rows = capacity(request, body.gpu_ids, sharding=body.multi_gpu)
        version, request_doc, peak = est.estimator_version, request_document(est), est.peak_bytes
    return {
        "estimator_version": version,
        "request": request_doc,
        "peak_bytes": peak,
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
            results.append({"label": label, "document": document_for(to_request(body, variant=v), body.gpu_ids),
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
    """A catalog model, or a Hub model read as :func:`hub_model_summary` says."""
    if hub.names_hub_model(model_id):
        return hub_model_summary(model_id, with_config)
    m = get_model(model_id)
    return _summary(m.id, m.name, m.family, m.hf_repo, m.source, m.arch, with_config)


def hub_model_summary(name: str, with_config: bool = False) -> dict[str, Any]:
    """A Hub model as the catalog lists its own: its family is its ``model_type``, its source the
    commit it was read at."""
    snapshot = hub.active().resolve(parse_hub_ref(name)).snapshot
    arch = arch_from_config(snapshot.config)
    return _summary(snapshot.repo_id, snapshot.repo_id, arch.model_type, snapshot.repo_id,
                    f"Hugging Face Hub, {snapshot.reference}", arch, with_config)


def _summary(model_id: str, name: str, family: str, hf_repo: str, source: str, arch: ArchSpec,
             with_config: bool) -> dict[str, Any]:
    out = {
        "id": model_id, "name": name, "family": family, "model_type": arch.model_type, "hf_repo": hf_repo,
        "source": source, "params": arch.total_params, "linear_modules": list(arch.linear_names),
        "default_target_modules": list(default_targets(arch).modules),
    }
    if with_config:
        out["config"] = dict(arch.config)
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
