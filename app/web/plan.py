"""The planning form and its result page: parse the query string, build what the template shows.

All formatting (GiB figures, percentages, chart geometry) happens here; templates only place it.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import QueryParams

from tunefit.app.hub import resolver as hub
from tunefit.app.jobs.schemas import ProfileIn
from tunefit.app.planning import service
from tunefit.app.planning.schemas import (
    MAX_ALPHA,
    MAX_TARGETS,
    CapacityIn,
    CompareIn,
    Dtype,
    EstimateIn,
    LoraIn,
    QuantIn,
    config_from_text,
)
from tunefit.app.web.charts import gib_text, stacked_chart
from tunefit.estimator import ESTIMATOR_VERSION, EstimateError, arch_from_config, get_model, gpus, models
from tunefit.estimator.adapters import ALL_LINEAR, VARIANTS, Variant, targets_text
from tunefit.estimator.advice import COMMON_GPUS
from tunefit.estimator.arch import ArchSpec
from tunefit.estimator.document import request_from_document
from tunefit.estimator.peft_defaults import default_targets
from tunefit.estimator.quant import QUANT_TYPES, QuantType
from tunefit.estimator.recipes import (
    DEFAULT_RECIPE,
    NO_RECIPE,
    RECIPE_CHOICES,
    RECIPES,
    NoRecipe,
    RecipeName,
    recipe_line,
)
from tunefit.estimator.request import (
    ADAPTER_DTYPES,
    ATTN_IMPLEMENTATIONS,
    AUTOCASTS,
    COMPUTE_DTYPES,
    DEFAULT_DTYPE,
    DEFAULT_REQUEST,
    DEVICES,
    INFERENCE_MODES,
    LOOPS,
    LOSSES,
    MAX_BATCH,
    MAX_GRAD_ACCUM,
    MAX_RANK,
    MAX_SEQ,
    METHODS,
    OBJECTIVES,
    OPTIMIZERS,
    QLORA_DEFAULT_QUANT,
    AdapterDtype,
    AttnImplementation,
    Autocast,
    Device,
    InferenceMode,
    Loop,
    Loss,
    Method,
    Objective,
    Optimizer,
)
from tunefit.estimator.units import GIB
from tunefit.profiler.limits import simulation_refusal

# The form's defaults are the estimator's (DEFAULT_REQUEST), as the CLI's and the API's are; the
# model the page opens on is a 7B one (the CLI and the API ask for one).
DEFAULT = DEFAULT_REQUEST
FORM_MODEL = "llama-2-7b"
QUANTIZED_TYPES = tuple(t for t in QUANT_TYPES if t != "none")
BOOLEANS = ("all_linear", "double_quant")
MAX_CONFIG_CHARS = 100_000
BREAKDOWN_LABELS = {
    "weights_bytes": "Base weights (unquantized)",
    "quantized_weights_bytes": "Quantized weights (packed)",
    "quant_constants_bytes": "Quantization constants",
    "adapter_bytes": "Adapters (fp32)",
    "gradients_bytes": "Gradients",
    "optimizer_bytes": "Optimizer states",
    "optimizer_step_temp_bytes": "Optimizer step temporaries",
    "activations_bytes": "Saved activations",
    "logits_bytes": "Logits and loss",
    "kv_cache_bytes": "KV cache",
    "working_bytes": "Working buffers",
    "cuda_context_bytes": "CUDA context",
    "allocator_slack_bytes": "Allocator slack",
}


class PlanForm(BaseModel):
    """The planning form, as its query string carries it (so a result is a bookmarkable URL)."""

    model_config = ConfigDict(extra="ignore")

    # "I train with ...": a framework's defaults for what the query leaves out ("none": the libraries')
    recipe: RecipeName | NoRecipe = DEFAULT_RECIPE
    model: str = Field(FORM_MODEL, max_length=400)  # a catalog id, or a Hugging Face id[@revision]
    config: str = Field("", max_length=MAX_CONFIG_CHARS)
    method: Method = DEFAULT.method
    dtype: Dtype = DEFAULT_DTYPE
    r: int = Field(DEFAULT.lora.r, ge=1, le=MAX_RANK)
    alpha: float | None = Field(None, gt=0, le=MAX_ALPHA)
    targets: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)
    all_linear: bool = False
    variant: Variant = DEFAULT.lora.variant
    quant: QuantType = QLORA_DEFAULT_QUANT.type
    double_quant: bool = QLORA_DEFAULT_QUANT.double_quant
    batch_size: int = Field(DEFAULT.batch_size, ge=1, le=MAX_BATCH)
    seq_len: int = Field(DEFAULT.seq_len, ge=1, le=MAX_SEQ)
    grad_accum: int = Field(DEFAULT.grad_accum, ge=1, le=MAX_GRAD_ACCUM)
    gradient_checkpointing: bool | None = DEFAULT.gradient_checkpointing  # None: the libraries' default
    prepare_kbit: bool = DEFAULT.prepare_kbit
    loop: Loop = DEFAULT.loop
    autocast: Autocast = DEFAULT.autocast
    loss: Loss | None = DEFAULT.loss  # None: the objective's library default
    objective: Objective = DEFAULT.objective
    inference_mode: InferenceMode = DEFAULT.inference_mode
    new_tokens: int = Field(DEFAULT.new_tokens, ge=0, le=MAX_SEQ)
    adapter_dtype: AdapterDtype | None = DEFAULT.adapter_dtype  # None: peft's, or a recipe's
    optimizer: Optimizer = DEFAULT.optimizer
    attn: AttnImplementation | None = DEFAULT.attn_implementation  # None: what transformers picks
    device: Device = DEFAULT.device
    gpu: str = Field("", max_length=100)
    submitted: bool = False


def parse_form(query: QueryParams) -> tuple[PlanForm, list[str]]:
    """The form from a query string, and the errors found (the defaults stand in for bad fields).
    The controls the query leaves out show its recipe's values (the default recipe's when it names
    none), as the page's script sets them when a recipe is picked."""
    preset = recipe_form_values().get(query.get("recipe") or DEFAULT_RECIPE, {})
    given = {**{k: str(v) for k, v in preset.items() if k not in query}, **dict(query.items())}
    data: dict[str, Any] = {k: v for k, v in given.items() if v != "" or k in ("config", "gpu")}
    data["targets"] = [t for t in query.getlist("targets") if t]
    submitted = "submitted" in query
    if submitted:  # an unchecked checkbox sends nothing
        for name in BOOLEANS:
            data[name] = name in query
    try:
        return PlanForm.model_validate(data), []
    except ValidationError as exc:
        errors = _located(exc)
        bad = {e["loc"][0] for e in exc.errors()}
        form = PlanForm.model_validate({k: v for k, v in data.items() if k not in bad})
        return form, errors


def _located(exc: ValidationError) -> list[str]:
    """pydantic's errors as ``field: message`` lines."""
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]


def setting_from_form(form: PlanForm) -> dict[str, Any]:
    """The shared API fields the form describes (validated by the API schemas' rules)."""
    model: Any = config_from_text(form.config) if form.config.strip() else form.model
    # none checked: the model's default targets (LoraIn's null, resolved by the estimator)
    targets: Any = ALL_LINEAR if form.all_linear else (form.targets or None)
    setting = dict(
        model=model, method=form.method, dtype=form.dtype, recipe=form.recipe,
        lora=LoraIn(r=form.r, alpha=form.alpha, target_modules=targets, variant=form.variant),
        quant=QuantIn(type=form.quant, double_quant=form.double_quant) if form.method == "qlora" else None,
        batch_size=form.batch_size, seq_len=form.seq_len, gradient_checkpointing=form.gradient_checkpointing,
        optimizer=form.optimizer, attn_implementation=form.attn, device=form.device,
        prepare_kbit=form.prepare_kbit, loop=form.loop, grad_accum=form.grad_accum, autocast=form.autocast,
        loss=form.loss, objective=form.objective, adapter_dtype=form.adapter_dtype,
        inference_mode=form.inference_mode, new_tokens=form.new_tokens,
    )
    # What the query leaves out is the recipe's, or without one the libraries' default; so is what
    # it sets to the recipe's own value (the page's script fills the form with a recipe's values
    # when it is picked, so a submitted form sends them all): the recipe then applies it where the
    # model can take it, and says where not (``recipe_exceptions``).
    preset = RECIPES[form.recipe].fields if form.recipe != NO_RECIPE else {}
    given = form.model_fields_set
    kept = {k: v for k, v in setting.items()
            if k in ("model", "recipe", "lora", "method")
            or (FORM_FIELDS.get(k, k) in given and preset.get(k, _UNSET) != v)}
    lora = setting["lora"]
    kept["lora"] = LoraIn(**{key: getattr(lora, key) for key, fields in LORA_FORM_FIELDS.items() if given & fields})
    return kept


_UNSET = object()
# A setting's key -> the form field it comes from, where the names differ
FORM_FIELDS = {"attn_implementation": "attn"}
# LoraIn's fields -> the form fields they come from
LORA_FORM_FIELDS = {"r": {"r"}, "alpha": {"alpha"}, "target_modules": {"targets", "all_linear"}, "variant": {"variant"}}


# The training step's settings a recipe may set, at their defaults
STEP_DEFAULTS = {key: getattr(DEFAULT, key) for key in ("optimizer", "loop", "grad_accum", "autocast", "objective",
                                                          "prepare_kbit")}


@cache
def recipe_form_values() -> dict[str, dict[str, Any]]:
    """Per recipe, the form controls' values it sets (the page's script applies them when a user
    picks the recipe): ``RECIPES``' fields in the form's names and spellings; the step's controls a
    recipe leaves out go back to their defaults (another recipe picked before may have set them)."""
    out: dict[str, dict[str, Any]] = {}
    for name, fields in ((NO_RECIPE, {}), *((n, r.fields) for n, r in RECIPES.items())):
        f = {**STEP_DEFAULTS, **fields}
        values: dict[str, Any] = {k: f[k] for k in ("method", "dtype", "optimizer", "loop", "grad_accum", "autocast",
                                                     "loss", "objective")
                                  if k in f}
        for key in ("gradient_checkpointing", "prepare_kbit"):
            if f.get(key) is not None:
                values[key] = "on" if f[key] else "off"
        for key in ("gradient_checkpointing", "loss"):  # the libraries' default
            if key not in fields:
                values[key] = ""
        values["adapter_dtype"] = ""  # the recipe's for QLoRA only (recipes.QLORA_ONLY): left to it
        lora = f.get("lora", {})
        if "r" in lora:
            values["r"] = lora["r"]
        if "alpha" in lora:
            values["alpha"] = lora["alpha"]
        if lora.get("target_modules") == ALL_LINEAR:
            values["all_linear"] = True
        quant = f.get("quant", {})
        if "type" in quant:
            values["quant"] = quant["type"]
        if "double_quant" in quant:
            values["double_quant"] = quant["double_quant"]
        out[name] = values
    return out


def form_arch(form: PlanForm) -> ArchSpec | None:
    """The chosen architecture (a pasted config.json's, else the catalog model's), for the target
    checkboxes; None where it cannot be read (the result says why)."""
    try:
        if form.config.strip():
            return arch_from_config(config_from_text(form.config).config)
        if hub.names_hub_model(form.model):
            return arch_from_config(hub.active().model_arg(form.model)["config"])
        return get_model(form.model).arch
    except (EstimateError, ValueError, TypeError, AttributeError):
        return None


def form_context(form: PlanForm) -> dict[str, Any]:
    """Everything the form needs: choices, catalogs, the current values; the checkboxes are the
    architecture's LoRA-targetable modules, its default targets checked until others are chosen."""
    arch = form_arch(form)
    return {
        "form": form,
        "modules": list(arch.linear_names) if arch else [],
        "default_targets": list(default_targets(arch).modules) if arch else [],
        "models": [{"id": m.id, "name": m.name, "params_b": f"{m.arch.total_params / 1e9:.2f}"}
                   for m in models().values()],
        "gpus": [{"id": g.id, "name": g.name, "gib": gib_text(g.usable_bytes)} for g in gpus().values()],
        "choices": {
            "method": METHODS, "dtype": COMPUTE_DTYPES, "variant": VARIANTS,
            "quant": QUANTIZED_TYPES, "optimizer": OPTIMIZERS, "attn": ATTN_IMPLEMENTATIONS,
            "device": DEVICES, "loop": LOOPS, "autocast": AUTOCASTS, "loss": LOSSES,
            "objective": OBJECTIVES, "adapter_dtype": ADAPTER_DTYPES, "inference_mode": INFERENCE_MODES,
            "recipe": RECIPE_CHOICES,
        },
        "recipe_values": recipe_form_values(),
    }


def plan_label(form: PlanForm) -> str:
    model = "config.json" if form.config.strip() else form.model
    lora = f" r={form.r}" if form.method in ("lora", "qlora") else ""
    return f"{model} {form.method}{lora} batch {form.batch_size} seq {form.seq_len}"


def result_context(form: PlanForm, query: QueryParams | None = None) -> dict[str, Any]:
    """The result page: the verdict first (for the GPU chosen, else the common ones), headline,
    breakdown, charts, GPU table, comparison, assumptions."""
    shared = setting_from_form(form)
    doc = service.estimate_document(EstimateIn(**shared, gpus=[form.gpu] if form.gpu else list(COMMON_GPUS)))
    cap = service.capacity_document(CapacityIn(**shared))
    compare = service.compare_document(CompareIn(**shared))  # default columns: full, LoRA, QLoRA
    return {
        "doc": doc,
        "verdicts": [_verdict_view(v, query or QueryParams()) for v in doc["verdicts"]],
        "headline": _headline(doc),
        "breakdown": [{"label": BREAKDOWN_LABELS.get(k, k), "gib": gib_text(v), "bytes": f"{v:,}"}
                      for k, v in doc["breakdown"].items() if v],
        "charts": _charts(doc, compare),
        "gpu_rows": _gpu_rows(cap, form.gpu),
        "compare_rows": _compare_rows(compare),
        "assumptions": doc["assumptions"],
        "simulation_refusal": simulation_refusal(request_from_document(doc["request"])),
    }


# A suggestion's change (request document fields) as the form's query spells it; a change the form
# cannot express (several GPUs) gets no link.
def _form_change(change: dict[str, Any]) -> dict[str, str] | None:
    out = {}
    for key, value in change.items():
        if key in ("num_gpus", "sharding"):
            return None
        name = FORM_FIELD_OF.get(key, key)
        if value is None:
            out[name] = ""  # back to the recipe's, or the library default
        elif isinstance(value, bool):
            out[name] = "on" if value else "off"
        else:
            out[name] = str(value)
    return out


FORM_FIELD_OF = {v: k for k, v in FORM_FIELDS.items()}


def _verdict_view(v: dict[str, Any], query: QueryParams) -> dict[str, Any]:
    """A verdict as the page shows it: its sentence, and each suggestion with a link to its plan."""
    current = {k: val for k, val in query.multi_items() if k != "targets"}
    targets = query.getlist("targets")
    suggestions = []
    for s in v["suggestions"]:
        change = _form_change(s["change"])
        href = None
        if change is not None:
            merged = {**current, **change, "submitted": "1"}
            href = "/?" + urlencode([*((k, val) for k, val in merged.items() if val != ""),
                                     *(("targets", t) for t in targets)])
        suggestions.append({"label": s["label"], "cost": s["cost"], "peak_gib": gib_text(s["peak_bytes"]),
                            "href": href})
    return {"gpu": v["gpu"], "fits": v["fits"], "sentence": v["sentence"], "explanations": v["explanations"],
            "suggestions": suggestions}


def _headline(doc: dict[str, Any]) -> dict[str, Any]:
    paper = doc["paper"]
    ours = doc["peak_bytes"]
    diff = ours - paper["bytes"]
    return {
        "source": doc.get("model_source"),
        "peak_gib": gib_text(ours),
        "peak_allocated_gib": gib_text(doc["peak_allocated_bytes"]),
        "peak_phase": doc["peak_phase"],
        "total_params": f"{doc['params']['total']:,}",
        "trainable_params": f"{doc['params']['trainable']:,}",
        "trainable_percent": f"{doc['params']['trainable_percent']:.4f}",
        "lora_ratio": f"{paper['lora_ratio']:.6f}" if paper["lora_ratio"] is not None else None,
        "nf4_bits": f"{paper['nf4_constant_bits_per_param']:.3f}" if paper["nf4_constant_bits_per_param"] else None,
        "paper_formula": paper["formula"],
        "paper_gib": gib_text(paper["bytes"]),
        "diff_gib": ("+" if diff >= 0 else "−") + gib_text(abs(diff)),
        "diff_percent": f"{100 * diff / paper['bytes']:+.1f}" if paper["bytes"] else None,
        "paged_gib": gib_text(doc["paged_optimizer_bytes"]) if doc["paged_optimizer_bytes"] else None,
        "recipe": recipe_line(doc["request"]),
        "targets": targets_text(lora["target_modules"]) if (lora := doc["request"]["lora"]) else None,
    }


def _charts(doc: dict[str, Any], compare: dict[str, Any]) -> list:
    peak = stacked_chart("Breakdown at the peak", [("peak", doc["breakdown"])])
    phases = stacked_chart("Allocated memory by phase of the step",
                           [(p["phase"], p["terms"]) for p in doc["phases"]], highlight=doc["peak_phase"])
    rows = [(r["label"], r["document"]["breakdown"]) for r in compare["results"] if r["document"]]
    charts = [peak, phases]
    if rows:
        charts.append(stacked_chart("Full fine-tuning vs LoRA vs QLoRA, peak on device", rows))
    return charts


def _gpu_rows(cap: dict[str, Any], chosen: str) -> list[dict[str, Any]]:
    return [
        {"id": r["gpu"], "name": r["name"], "usable_gib": gib_text(r["usable_bytes"]), "fits": r["fits"],
         "headroom_gib": ("+" if r["headroom_bytes"] >= 0 else "−") + gib_text(abs(r["headroom_bytes"])),
         "max_batch": r["max_batch_size"], "max_seq": f"{r['max_seq_len']:,}",
         "gpus_needed": r["gpus_needed"] if r["gpus_needed"] is not None else "—", "chosen": r["gpu"] == chosen}
        for r in cap["rows"]
    ]


def _compare_rows(compare: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in compare["results"]:
        d = r["document"]
        rows.append({"label": r["label"], "error": r["error"],
                     "peak_gib": gib_text(d["peak_bytes"]) if d else None,
                     "paper_gib": gib_text(d["paper"]["bytes"]) if d else None,
                     "trainable": f"{d['params']['trainable']:,}" if d else None,
                     "peak_phase": d["peak_phase"] if d else None})
    return rows


def page_context(query: QueryParams) -> dict[str, Any]:
    """The whole page for a query string: the form, and the result once submitted."""
    form, errors = parse_form(query)
    context = form_context(form)
    context.update(errors=errors, result=None, gib_bytes=f"{GIB:,}", estimator_version=ESTIMATOR_VERSION,
                   query=str(query), job_steps=JOB_STEPS)
    if form.submitted and not errors:
        try:
            context["result"] = result_context(form, query)
        except EstimateError as exc:
            context["errors"] = [str(exc)]
        except ValidationError as exc:
            context["errors"] = _located(exc)
    # what the user typed stays in the form, even where it is wrong, with its error beside it
    context.update(typed=dict(query.items()), field_errors=field_errors(context["errors"]))
    return context


# An error's field (an API or estimator name) -> the form control it belongs to, where the name
# alone does not say (``lora.r`` is the control ``r``, ``batch_size`` itself)
ERROR_FIELDS = {**FORM_FIELDS, "lora.target_modules": "targets", "quant.type": "quant", "model.config": "config"}


def field_errors(errors: list[str]) -> dict[str, str]:
    """``field: message`` lines by the form control they belong to (the first message of each)."""
    out: dict[str, str] = {}
    for line in errors:
        name, _, message = line.partition(": ")
        name = name.removeprefix("body.")
        control = ERROR_FIELDS.get(name) or (name.split(".")[-1] if name.startswith("lora.") else name.split(".")[0])
        out.setdefault(control, message)
    return out


def recent_rows(plans) -> list[dict[str, str]]:
    """Recent plans as links: their query string, label and peak in GiB."""
    return [{"query": p.query, "label": p.label, "peak_gib": gib_text(p.peak_bytes)} for p in plans]


# ---- measuring a plan ----------------------------------------------------------------------------

JOB_STEPS = (1, 2, 3, 5)
DEFAULT_JOB_STEPS = 3


def profile_from_plan(plan_query: str, steps: str, simulated: bool = False) -> ProfileIn:
    """The profiling request for the plan a result page shows (its query string) and ``steps``;
    ``simulated``: a meta-device simulation for the plan's device type instead."""
    form, errors = parse_form(QueryParams(plan_query))
    if errors:
        raise EstimateError("plan", "; ".join(errors))
    try:  # the API's schemas judge the plan: a bound the form misses is a located error too
        setting = setting_from_form(form)
        if simulated:
            setting.update(device="meta", target=form.device)
        return ProfileIn(**setting, steps=steps if steps.isdigit() else DEFAULT_JOB_STEPS)
    except ValidationError as exc:
        raise EstimateError("plan", "; ".join(_located(exc))) from exc


def evidence_context(found: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, str]]:
    """The plan's three columns: ours (the formula), the stored simulation, the stored measurement
    (tensor bytes at the peak, GiB; error of ours against each)."""
    ours = doc["peak_allocated_bytes"]
    rows = [{"source": "formula (ours)", "gib": gib_text(ours), "error": "", "href": ""}]
    for source in ("simulated", "measured"):
        item = found.get(source)
        if item is None:
            rows.append({"source": source, "gib": "—", "error": "", "href": ""})
            continue
        error = 100 * (ours - item["bytes"]) / item["bytes"] if item["bytes"] else 0.0
        rows.append({"source": f"{source} ({item['device_kind']})", "gib": gib_text(item["bytes"]),
                     "error": f"{error:+.2f} %", "href": f"/reports/{item['id']}"})
    return rows
