"""What the user asks: one frozen dataclass, validated field by field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .adapters import LoraSpec, VARIANTS
from .arch import ArchSpec, arch_from_config
from .catalog import get_model
from .errors import EstimateError
from .quant import BLOCKSIZES, QUANT_TYPES, QuantSpec
from .units import DTYPE_ALIASES

METHODS = ("inference", "full", "lora", "qlora")
COMPUTE_DTYPES = ("fp32", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "sgd", "sgd_momentum")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
DEVICES = ("cuda", "cpu")
SHARDING = ("none", "ddp", "zero1", "zero2", "zero3", "fsdp")
MAX_BATCH = 2**20
MAX_SEQ = 2**24
MAX_GPUS = 4096
MAX_RANK = 65536


@dataclass(frozen=True)
class EstimateRequest:
    """A fine-tuning (or inference) setting to estimate.

    ``model`` is a catalog id, a ``config.json`` dict or an :class:`ArchSpec`.
    ``dtype`` is the dtype the weights are loaded in (``torch_dtype``) and, for QLoRA, the
    bitsandbytes compute dtype. ``batch_size`` is the micro-batch per device.
    ``prepare_kbit`` mirrors peft's ``prepare_model_for_kbit_training`` for QLoRA, which casts
    every non-quantized parameter (embeddings, norms, ``lm_head``) to fp32.
    """

    model: Any
    method: str = "lora"
    dtype: str = "bf16"
    lora: LoraSpec = field(default_factory=LoraSpec)
    quant: QuantSpec | None = None
    batch_size: int = 1
    seq_len: int = 512
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"
    attn_implementation: str = "sdpa"
    device: str = "cuda"
    gpu: str | None = None
    num_gpus: int = 1
    sharding: str = "none"
    prepare_kbit: bool = True


def _choice(field_name: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise EstimateError(field_name, f"must be one of {list(options)}, got {value!r}")
    return value


def _positive_int(field_name: str, value: Any, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EstimateError(field_name, f"must be a positive integer, got {value!r}")
    if value > maximum:
        raise EstimateError(field_name, f"must be at most {maximum}, got {value}")
    return value


def resolve_model(model: Any) -> ArchSpec:
    """Catalog id, config dict or :class:`ArchSpec` -> :class:`ArchSpec`."""
    if isinstance(model, str):
        return get_model(model).arch
    if isinstance(model, ArchSpec):
        return model
    if isinstance(model, Mapping):
        return arch_from_config(model.get("config", model) if "model_type" not in model else model)
    raise EstimateError("model", "must be a catalog id or a config.json object")


QLORA_DEFAULT_QUANT = QuantSpec("nf4", True, 64)
NO_QUANT = QuantSpec("none", False, 64)


def default_quant(method: str) -> QuantSpec:
    """QLoRA defaults to NF4 with double quantization (the QLoRA paper's setting)."""
    return QLORA_DEFAULT_QUANT if method == "qlora" else NO_QUANT


def normalize(request: EstimateRequest) -> tuple[EstimateRequest, ArchSpec]:
    """Validate every field; return the request with defaults filled in, and its architecture."""
    dtype, quant, arch = _setting(request)
    _positive_int("batch_size", request.batch_size, MAX_BATCH)
    _positive_int("seq_len", request.seq_len, MAX_SEQ)
    if dtype != request.dtype or quant is not request.quant:
        request = EstimateRequest(**{**request.__dict__, "dtype": dtype, "quant": quant})  # replace(), without its overhead
    return request, arch


# Validated settings of catalog models, by every field but the shape: a service sees the same
# few settings at many batch sizes and sequence lengths.
_VALID_SETTINGS: dict[tuple, tuple[str, QuantSpec, ArchSpec]] = {}
MAX_VALID_SETTINGS = 4096


def _setting(request: EstimateRequest) -> tuple[str, QuantSpec, ArchSpec]:
    """:func:`_validate_setting`, remembered for requests that name a catalog model."""
    if not isinstance(request.model, str):
        return _validate_setting(request)
    lora = request.lora
    # types too: True == 1 and 1.0 == 1, but only the int is a valid count
    key = (request.model, request.method, request.dtype, lora, request.quant, request.optimizer,
           request.attn_implementation, request.device, request.sharding, request.num_gpus,
           type(request.num_gpus), type(lora.r), type(lora.dropout))
    try:
        known = _VALID_SETTINGS.get(key)
    except TypeError:  # an unhashable field (a list of targets): validate without remembering
        return _validate_setting(request)
    if known is None:
        known = _validate_setting(request)
        if len(_VALID_SETTINGS) >= MAX_VALID_SETTINGS:
            _VALID_SETTINGS.clear()
        _VALID_SETTINGS[key] = known
    return known


def _validate_setting(request: EstimateRequest) -> tuple[str, QuantSpec, ArchSpec]:
    """Validate every field but the batch size and sequence length; the canonical dtype, the
    quantization with its default filled in, and the architecture."""
    _choice("method", request.method, METHODS)
    dtype = DTYPE_ALIASES.get(str(request.dtype).lower(), str(request.dtype).lower())
    _choice("dtype", dtype, COMPUTE_DTYPES)
    _choice("optimizer", request.optimizer, OPTIMIZERS)
    _choice("attn_implementation", request.attn_implementation, ATTN_IMPLEMENTATIONS)
    _choice("device", request.device, DEVICES)
    _choice("sharding", request.sharding, SHARDING)
    _positive_int("num_gpus", request.num_gpus, MAX_GPUS)
    quant = request.quant or default_quant(request.method)
    _choice("quant.type", quant.type, QUANT_TYPES)
    if quant.is_4bit and quant.blocksize not in BLOCKSIZES:
        raise EstimateError("quant.blocksize", f"must be one of {list(BLOCKSIZES)}, got {quant.blocksize!r}")
    if request.method == "qlora" and not quant.enabled:
        raise EstimateError("quant.type", "qlora needs a quantized base (nf4, fp4 or int8)")
    if request.method in ("full", "lora") and quant.enabled:
        raise EstimateError("quant.type", f"{request.method} trains an unquantized base; use method 'qlora'")
    if request.method in ("lora", "qlora"):
        _validate_lora(request.lora)
    if request.attn_implementation == "flash_attention_2" and (request.device == "cpu" or dtype == "fp32"):
        raise EstimateError("attn_implementation", "flash_attention_2 needs device 'cuda' and fp16/bf16")
    if request.sharding != "none" and request.num_gpus == 1:
        raise EstimateError("num_gpus", f"sharding {request.sharding!r} needs num_gpus > 1")
    arch = resolve_model(request.model)
    if request.attn_implementation == "sdpa" and not arch.supports_sdpa:
        raise EstimateError("attn_implementation",
                            f"transformers has no sdpa attention for {arch.model_type}; use 'eager' or 'flash_attention_2'")
    return dtype, quant, arch


def _validate_lora(lora: LoraSpec) -> None:
    _choice("lora.variant", lora.variant, VARIANTS)
    _positive_int("lora.r", lora.r, MAX_RANK)
    if not isinstance(lora.dropout, (int, float)) or not 0 <= lora.dropout < 1:
        raise EstimateError("lora.dropout", f"must be in [0, 1), got {lora.dropout!r}")
