"""Pydantic schemas of planning (estimate, capacity, compare, catalogs), one per purpose: what a
client sends, what it gets back. Profiling jobs extend ``SettingIn`` in ``app.jobs.schemas``."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, field_validator

from tunefit.estimator import EstimateError
from tunefit.estimator.adapters import AllLinear, Variant
from tunefit.estimator.hardware import Capacity
from tunefit.estimator.peft_defaults import MAPPING_NAME, PEFT_VERSION
from tunefit.estimator.quant import Blocksize, QuantType
from tunefit.estimator.recipes import DEFAULT_RECIPE, NO_RECIPE, NoRecipe, RecipeName
from tunefit.estimator.request import (
    DEFAULT_DTYPE,
    DEFAULT_REQUEST,
    MAX_BATCH,
    MAX_GPUS,
    MAX_GRAD_ACCUM,
    MAX_RANK,
    MAX_SEQ,
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
    Sharding,
)

# Every default below is the estimator's own (DEFAULT_REQUEST, its LoraSpec, the QLoRA quantization).
DEFAULT = DEFAULT_REQUEST
Dtype = Literal["fp32", "fp16", "bf16", "float32", "float16", "bfloat16"]
MAX_GPU_IDS = 64
MAX_TARGETS = 64
MAX_ALPHA = 1e6
MAX_COMPARE_VARIANTS = 16  # columns of one comparison
ModuleName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
ModuleList = Annotated[list[ModuleName], Field(min_length=1, max_length=MAX_TARGETS)]
Targets = ModuleList | AllLinear


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- inputs ------------------------------------------------------------------------------------


class ConfigModel(_Strict):
    """A Hugging Face ``config.json`` object instead of a catalog id; ``source`` is where it came
    from, as an answer names it (a Hub id at a commit), echoed back as given."""

    config: dict[str, Any]
    source: dict[str, Any] | None = Field(None, description="where the config came from (a document's "
                                                            "request.model.source), echoed back as given")

    @field_validator("config")
    @classmethod
    def _finite(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Python's JSON reader accepts NaN, Infinity and integers of any size; no config value
        is any of them, and the answer, which echoes the config, must stay portable JSON."""
        stack: list[Any] = [config]
        while stack:
            value = stack.pop()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError("integers must fit in 64 bits")
            if isinstance(value, dict):
                stack.extend(value.values())
            elif isinstance(value, list):
                stack.extend(value)
        return config


_JSON_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def config_from_text(text: str | bytes) -> ConfigModel:
    """A pasted ``config.json`` (the form's text field) read as the API reads a request body:
    pydantic's JSON parser, with its nesting and number limits, then :class:`ConfigModel`'s checks.
    Anything it refuses is a :class:`EstimateError` located at ``config``."""
    try:
        return ConfigModel(config=_JSON_OBJECT.validate_json(text))
    except ValidationError as exc:
        reasons = "; ".join(e["msg"] for e in exc.errors())
        raise EstimateError("config", f"is not a usable JSON object: {reasons}") from exc


class CheckpointModel(_Strict):
    """A local checkpoint directory (profiling jobs only): read only under the service's configured
    checkpoint directories (``TUNEFIT_CHECKPOINT_DIRS``), never with the checkpoint's own code."""

    checkpoint: str = Field(..., min_length=1, max_length=1024,
                            description="directory with config.json and weights, absolute or relative to a "
                                        "configured checkpoint directory")


class LoraIn(_Strict):
    """peft ``LoraConfig`` / ``VeraConfig`` settings (ignored for methods full and inference)."""

    r: int = Field(DEFAULT.lora.r, ge=1, le=MAX_RANK, description="rank")
    alpha: float | None = Field(None, gt=0, le=MAX_ALPHA, description="lora_alpha (default 2·r)")
    target_modules: Targets | None = Field(
        None,  # LoraSpec's: the model's default targets, resolved by the estimator
        description=f"module names, or 'all-linear'; null (the default): peft's default for the model's model_type "
                    f"(peft {PEFT_VERSION}'s {MAPPING_NAME}), or where peft has none the model's query and value "
                    f"projections (the answer's request names the modules, its assumptions say which)")
    variant: Variant = DEFAULT.lora.variant
    dropout: float = Field(DEFAULT.lora.dropout, ge=0, lt=1, description="lora_dropout")


class QuantIn(_Strict):
    """bitsandbytes quantization of the base (QLoRA defaults to NF4 with double quantization)."""

    type: QuantType = QLORA_DEFAULT_QUANT.type
    double_quant: bool = QLORA_DEFAULT_QUANT.double_quant
    blocksize: Blocksize = QLORA_DEFAULT_QUANT.blocksize


class SettingIn(_Strict):
    """One fine-tuning (or inference) setting: the fields every endpoint shares."""

    model: str | ConfigModel = Field(..., description="catalog id (tunefit models), Hugging Face id (org/name, "
                                     "optionally @revision), or {'config': {...config.json...}}")
    revision: str | None = Field(None, min_length=1, max_length=255,
                                 description="for a Hugging Face id: a branch, tag or commit hash (default main)")
    recipe: RecipeName | NoRecipe | None = Field(
        DEFAULT_RECIPE, description=f"a framework's defaults for the fields this request leaves out (hf-trainer, "
                                    f"trl-sft, trl-dpo, qlora-paper, unsloth); default {DEFAULT_RECIPE}; "
                                    f"{NO_RECIPE!r} (or null): the libraries' own defaults, without a framework")
    method: Method = DEFAULT.method
    dtype: Dtype = DEFAULT_DTYPE
    lora: LoraIn = Field(default_factory=lambda: LoraIn())
    quant: QuantIn | None = None
    batch_size: int = Field(DEFAULT.batch_size, ge=1, le=MAX_BATCH, description="micro-batch per device")
    seq_len: int = Field(DEFAULT.seq_len, ge=1, le=MAX_SEQ, description="tokens per sequence")
    gradient_checkpointing: bool | None = Field(
        DEFAULT.gradient_checkpointing,
        description="null: the libraries' default (on for QLoRA through peft's prepare_model_for_kbit_training, "
                    "else off)")
    optimizer: Optimizer = DEFAULT.optimizer
    attn_implementation: AttnImplementation | None = Field(
        DEFAULT.attn_implementation,
        description="null: what transformers picks (sdpa where the model class supports it, else eager)")
    device: Device = DEFAULT.device
    num_gpus: int = Field(DEFAULT.num_gpus, ge=1, le=MAX_GPUS)
    sharding: Sharding = DEFAULT.sharding
    prepare_kbit: bool = Field(DEFAULT.prepare_kbit,
                               description="QLoRA: run peft's prepare_model_for_kbit_training (norms, embeddings "
                                           "and lm_head in fp32)")
    loop: Loop = Field(DEFAULT.loop, description="trainer: only the loss is kept (Hugging Face Trainer, TRL); "
                                                 "plain: the model's output is kept through backward")
    grad_accum: int = Field(DEFAULT.grad_accum, ge=1, le=MAX_GRAD_ACCUM,
                            description="micro-batches per optimizer step (gradient accumulation)")
    autocast: Autocast = Field(DEFAULT.autocast, description="torch.autocast around the forward (Hugging Face "
                                                             "Trainer's bf16=True / fp16=True); none: no autocast")
    loss: Loss | None = Field(DEFAULT.loss, description="standard: transformers' loss over the full logits; chunked: "
                                                        "TRL's fused LM head, in tiles (its SFT and DPO trainers); "
                                                        "null: chunked for dpo (TRL's DPOTrainer), else standard")
    adapter_dtype: AdapterDtype | None = Field(DEFAULT.adapter_dtype,
                                               description="fp32: peft's adapters (get_peft_model upcasts them); "
                                                           "bf16: as TRL's trainers cast a quantized model's; null: "
                                                           "fp32, or bf16 for QLoRA under a TRL recipe")
    inference_mode: InferenceMode = Field(DEFAULT.inference_mode,
                                          description="method inference: generate (generate()'s prefill) or "
                                                      "forward (an evaluation forward with labels)")
    new_tokens: int = Field(DEFAULT.new_tokens, ge=0, le=MAX_SEQ,
                            description="method inference: tokens generate() decodes after the prompt (0: the "
                                        "prefill alone)")
    objective: Objective = Field(DEFAULT.objective, description="sft: next-token loss; dpo: TRL's DPOTrainer, a "
                                                               "chosen and a rejected sequence per example scored "
                                                               "against a frozen reference")


GpuIds = Annotated[list[ModuleName], Field(min_length=1, max_length=MAX_GPU_IDS)]


class GpuChoice(_Strict):
    """The GPUs a query names: ``gpus``, a list of catalog GPU ids (the one spelling documented
    across estimate, capacity and compare); a single ``gpu`` id is taken too."""

    gpus: GpuIds | None = Field(None, description="catalog GPU ids to answer for (see GET /api/v1/gpus)")
    gpu: str | None = Field(None, max_length=100, description="one catalog GPU id: the same as gpus: [gpu]")

    @property
    def gpu_ids(self) -> list[str] | None:
        """The GPUs named, in order, each once (None: none named)."""
        named = [*(self.gpus or ()), *([self.gpu] if self.gpu else [])]
        return list(dict.fromkeys(named)) or None


class EstimateIn(SettingIn, GpuChoice):
    """``POST /api/v1/estimate``: with GPUs named, the document opens with a verdict for each
    (``verdicts``: fits or not, by how much, the largest batch and sequence, what to change)."""


class CapacityIn(SettingIn, GpuChoice):
    """``POST /api/v1/capacity``: every catalog GPU, or the ones named."""

    multi_gpu: Literal["zero3", "fsdp"] = Field("zero3", description="sharding used for gpus_needed")


class VariantIn(_Strict):
    """One column of a comparison: what differs from the shared setting."""

    label: str | None = Field(None, max_length=100)
    method: Method | None = None
    r: int | None = Field(None, ge=1, le=MAX_RANK)
    target_modules: Targets | None = None
    variant: Variant | None = None
    quant: QuantIn | None = None


def _default_variants() -> list[VariantIn]:
    return [VariantIn(method="full"), VariantIn(method="lora"), VariantIn(method="qlora")]


class CompareIn(SettingIn, GpuChoice):
    """``POST /api/v1/compare``: the same model under several methods or ranks (with GPUs named,
    each column's document opens with its verdicts)."""

    variants: list[VariantIn] = Field(default_factory=_default_variants, min_length=1, max_length=MAX_COMPARE_VARIANTS)


# ---- outputs -----------------------------------------------------------------------------------


class ParamsOut(BaseModel):
    total: int
    trainable: int
    trainable_percent: float


class PaperOut(BaseModel):
    formula: str
    bytes: int
    lora_ratio: float | None
    nf4_constant_bits_per_param: float | None


class PhaseOut(BaseModel):
    phase: str
    allocated_bytes: int
    terms: dict[str, int]


class FitOut(BaseModel):
    gpu: str
    fits: bool
    headroom_bytes: int


class SuggestionOut(BaseModel):
    change: dict[str, Any]
    label: str
    cost: str
    peak_bytes: int
    fits: bool


class VerdictOut(BaseModel):
    gpu: str
    name: str
    usable_bytes: int
    peak_bytes: int
    fits: bool
    headroom_bytes: int
    headroom_percent: float
    peak_phase: str
    max_batch_size: int
    max_seq_len: int
    sentence: str
    explanations: list[str]
    suggestions: list[SuggestionOut]


class EstimateOut(BaseModel):
    """The estimate document: the same keys as ``tunefit estimate --json``."""

    verdicts: list[VerdictOut]
    estimator_version: str
    request: dict[str, Any]
    params: ParamsOut
    paper: PaperOut
    breakdown: dict[str, int]
    phases: list[PhaseOut]
    peak_allocated_bytes: int
    peak_bytes: int
    peak_gib: float
    peak_phase: str
    paged_optimizer_bytes: int
    fits: list[FitOut]
    assumptions: list[str]


class CapacityOut(BaseModel):
    estimator_version: str
    request: dict[str, Any]
    peak_bytes: int
    multi_gpu: str
    rows: list[Capacity]  # the estimator's own row, field for field


class CompareItemOut(BaseModel):
    label: str
    document: EstimateOut | None
    error: str | None


class CompareOut(BaseModel):
    results: list[CompareItemOut]
    config: dict[str, Any] | None = Field(None, description="a pasted config.json, echoed once: each column's "
                                                              "request names it by config_sha256")
    config_sha256: str | None = None


class ModelOut(BaseModel):
    id: str
    name: str
    family: str
    model_type: str
    hf_repo: str
    source: str
    params: int
    linear_modules: list[str]
    default_target_modules: list[str] = Field(..., description="what LoRA targets when target_modules is null")
    config: dict[str, Any] | None = None


class GpuOut(BaseModel):
    id: str
    name: str
    vendor: str
    memory_bytes: int
    memory_label: str
    usable_bytes: int
    usable_gib: float
    source: str


class ErrorOut(BaseModel):
    detail: Any
    suggestions: list[str] | None = None
