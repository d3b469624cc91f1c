"""What the user asks: one frozen dataclass, validated field by field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from .adapters import ALL_LINEAR, VARIANTS, LoraSpec
from .arch import ArchSpec, arch_from_config
from .catalog import get_model
from .chunked_loss import UNREACHABLE_BACKBONES
from .errors import EstimateError
from .peft_defaults import default_targets
from .quant import BLOCKSIZES, QUANT_TYPES, QuantSpec
from .recipes import RECIPE_NAMES, with_recipe
from .stored_quant import as_stored, stored_quant, unread_quantization
from .units import DTYPE_ALIASES

# Each choice is written once, as a Literal type (for type checkers and the API's schemas); the
# tuple of its values is derived from it (for validation and the CLI's choices).
Method = Literal["inference", "full", "lora", "qlora"]
ComputeDtype = Literal["fp32", "fp16", "bf16"]
Optimizer = Literal["adamw", "adamw_fused", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "sgd", "sgd_momentum"]
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2"]
Device = Literal["cuda", "cpu"]
Sharding = Literal["none", "ddp", "zero1", "zero2", "zero3", "fsdp"]
# What the training loop keeps of the model's output through backward: ``trainer`` only the loss
# (Hugging Face Trainer's ``compute_loss`` returns ``outputs["loss"]``; TRL's trainers too),
# ``plain`` the whole output, logits included, until the next step's forward has returned
# (``outputs = model(**batch); accelerator.backward(outputs.loss)``: accelerate's and peft's examples).
Loop = Literal["trainer", "plain"]
# torch.autocast around the forward, as accelerate wraps a prepared model's forward for Hugging Face
# Trainer's bf16=True / fp16=True (its outputs converted to fp32 after); "none": no autocast.
Autocast = Literal["none", "bf16", "fp16"]
# How the loss reads the logits: ``standard`` materializes them and upcasts them to fp32
# (transformers' ``ForCausalLMLoss``); ``chunked`` scores the labels through TRL's fused LM head
# in tiles, never materializing them (``trl.trainer.utils.add_fused_lm_head``: TRL's SFT and DPO trainers).
Loss = Literal["standard", "chunked"]
# What the step optimizes: ``sft`` the next-token loss of each sequence; ``dpo`` TRL's DPOTrainer's
# preference loss, a chosen and a rejected sequence per example scored against a frozen reference.
Objective = Literal["sft", "dpo"]
# The dtype peft's adapters (and so their gradients and optimizer state) are kept in: fp32, as
# get_peft_model upcasts 16-bit adapters (``autocast_adapter_dtype=True``), or bf16, as TRL 1.16's
# trainers cast a quantized model's trainable parameters after it (``param.data.to(torch.bfloat16)``).
AdapterDtype = Literal["fp32", "bf16"]
# What an inference run does: ``generate`` prefills the prompt as ``generate()`` does (KV cache,
# the last position's logits); ``forward`` is one no-grad forward with labels, every position's
# logits and the loss, as a perplexity evaluation runs it (``model(input_ids, labels=input_ids)``).
InferenceMode = Literal["generate", "forward"]
METHODS: tuple[Method, ...] = get_args(Method)
COMPUTE_DTYPES: tuple[ComputeDtype, ...] = get_args(ComputeDtype)
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
ATTN_IMPLEMENTATIONS: tuple[AttnImplementation, ...] = get_args(AttnImplementation)
DEVICES: tuple[Device, ...] = get_args(Device)
SHARDING: tuple[Sharding, ...] = get_args(Sharding)
LOOPS: tuple[Loop, ...] = get_args(Loop)
AUTOCASTS: tuple[Autocast, ...] = get_args(Autocast)
LOSSES: tuple[Loss, ...] = get_args(Loss)
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
ADAPTER_DTYPES: tuple[AdapterDtype, ...] = get_args(AdapterDtype)
INFERENCE_MODES: tuple[InferenceMode, ...] = get_args(InferenceMode)
# The dtype weights load in; a request may spell it as torch does (``DTYPE_ALIASES``).
DEFAULT_DTYPE: ComputeDtype = "bf16"
MAX_BATCH = 2**20
MAX_SEQ = 2**24
MAX_GPUS = 4096
MAX_RANK = 65536
MAX_GRAD_ACCUM = 2**16


@dataclass(frozen=True)
class EstimateRequest:
    """A fine-tuning (or inference) setting to estimate.

    ``model`` is a catalog id, a ``config.json`` dict or an :class:`ArchSpec`.
    ``dtype`` is the dtype the weights are loaded in (``torch_dtype``) and, for QLoRA, the
    bitsandbytes compute dtype. ``batch_size`` is the micro-batch per device.
    ``prepare_kbit`` mirrors peft's ``prepare_model_for_kbit_training`` for QLoRA, which casts
    every non-quantized parameter (embeddings, norms, ``lm_head``) to fp32.
    ``gradient_checkpointing`` and ``attn_implementation`` None take the libraries' defaults
    (:func:`default_checkpointing`, :func:`default_attention`), ``lora.target_modules`` None peft's
    default for the model_type (:func:`resolved_lora`); :func:`normalize` fills them in.
    ``grad_accum`` micro-batches make one optimizer step; ``loop`` says what the loop keeps of
    the model's output (:data:`Loop`); ``autocast`` the dtype ``torch.autocast`` runs the forward
    in (:data:`Autocast`); ``loss`` how the loss reads the logits (:data:`Loss`; None: the
    objective's library default, :func:`default_loss`); ``objective`` what the step optimizes
    (:data:`Objective`): with ``dpo`` each of the ``batch_size`` examples is a chosen and a rejected
    sequence of ``seq_len`` tokens (prompt and completion); ``adapter_dtype`` the dtype of peft's
    adapters (:data:`AdapterDtype`; None: peft's, :data:`DEFAULT_ADAPTER_DTYPE`); ``inference_mode``
    what an inference run does (:data:`InferenceMode`); ``new_tokens`` the tokens ``generate()``
    decodes after the prompt's prefill (0: the prefill alone).
    """

    model: Any
    method: Method = "lora"
    dtype: str = DEFAULT_DTYPE
    lora: LoraSpec = field(default_factory=LoraSpec)
    quant: QuantSpec | None = None
    batch_size: int = 1
    seq_len: int = 512
    gradient_checkpointing: bool | None = None
    optimizer: Optimizer = "adamw"
    attn_implementation: AttnImplementation | None = None
    device: Device = "cuda"
    gpu: str | None = None
    num_gpus: int = 1
    sharding: Sharding = "none"
    prepare_kbit: bool = True
    loop: Loop = "trainer"
    grad_accum: int = 1
    autocast: Autocast = "none"
    loss: Loss | None = None
    objective: Objective = "sft"
    adapter_dtype: AdapterDtype | None = None
    inference_mode: InferenceMode = "generate"
    new_tokens: int = 0
    # the framework preset the fields came from (``recipes.RECIPES``), if any: its fields are filled in by
    # ``request_from_fields`` (the one constructor every surface uses); set here, it only names the preset
    recipe: str | None = None
    # (field, why) for each of the recipe's fields this model cannot take as modelled: the field
    # kept its library default instead (:func:`_recipe_exceptions`)
    recipe_exceptions: tuple[tuple[str, str], ...] = ()


# The fields a request document (``document.request_document``) carries.
REQUEST_FIELDS = tuple(f.name for f in fields(EstimateRequest))
_REQUEST_FIELD_SET = frozenset(REQUEST_FIELDS)
_LORA_FIELD_SET = frozenset(f.name for f in fields(LoraSpec))
_QUANT_FIELD_SET = frozenset(f.name for f in fields(QuantSpec))
# The request with every default: the one place the CLI, the API's schemas and the form read them.
DEFAULT_REQUEST = EstimateRequest(model=None)


def request_from_fields(values: Mapping[str, Any]) -> EstimateRequest:
    """The one request constructor: the CLI, the REST service, stored documents and the profiler's
    validation matrix all build their requests here.

    ``values`` holds a request document's keys (:data:`REQUEST_FIELDS`, as
    ``document.request_document`` writes them), ``lora`` and ``quant`` as mappings. A key that is
    absent or None takes its default from :class:`EstimateRequest`, :class:`LoraSpec` or
    :class:`QuantSpec`, where each is written once: ``lora.alpha`` None is 2·r, ``quant`` None the
    method's default (:func:`default_quant`). A ``recipe`` fills the keys left out with its
    framework's defaults first (:func:`recipes.with_recipe`). Keys that are not request fields are
    refused.
    """
    fill = with_recipe(as_stored(dict(values), _config_of(values.get("model")), DEFAULT_REQUEST.method))
    given = _known("", fill.values, _REQUEST_FIELD_SET)
    given["lora"] = _lora_from(given.get("lora"))
    if "quant" in given:
        given["quant"] = QuantSpec(**_known("quant.", given["quant"], _QUANT_FIELD_SET))
    if isinstance(given.get("recipe_exceptions"), Mapping):  # a document's JSON object
        given["recipe_exceptions"] = tuple(given["recipe_exceptions"].items())
    request = EstimateRequest(**given)
    return _recipe_exceptions(request, fill.filled) if fill.filled else request


def _config_of(model: Any) -> Mapping[str, Any] | None:
    """A pasted (or Hub) model's config; None for a catalog id, whose configs load unquantized."""
    if isinstance(model, Mapping):
        config = model.get("config", model)
        return config if isinstance(config, Mapping) else None
    return None


# The recipe fields a model may be unable to take as modelled, in the order they are decided (the
# adapters' dtype depends on the autocast kept)
EXCEPTABLE_FIELDS = ("autocast", "adapter_dtype", "loss")


def _recipe_exceptions(request: EstimateRequest, filled: frozenset[str]) -> EstimateRequest:
    """``request`` with each field its recipe ``filled`` that the estimate cannot model for this
    model (:func:`recipe_field_refusal`) back at its library default (:data:`DEFAULT_REQUEST`'s),
    and why, in ``recipe_exceptions``: a preset applies what it can and says what it could not,
    where the same field given by the user is refused."""
    exceptions = []
    for name in EXCEPTABLE_FIELDS:
        if name not in filled:
            continue
        reason = recipe_field_refusal(request, name)
        fallback = replace(request, **{name: getattr(DEFAULT_REQUEST, name)})
        # a field whose default is refused too (DPO's loss) stays, for normalize to refuse
        if reason is not None and recipe_field_refusal(fallback, name) is None:
            request = fallback
            exceptions.append((name, reason))
    return replace(request, recipe_exceptions=tuple(exceptions)) if exceptions else request


def recipe_field_refusal(request: EstimateRequest, name: str) -> str | None:
    """Why the estimate cannot model ``request``'s field ``name`` (None: it can): the checks
    :func:`normalize` refuses those fields by. A model that cannot be read answers None here:
    :func:`normalize` reports it."""
    if name == "adapter_dtype":
        return adapter_dtype_refusal(request, request.adapter_dtype or DEFAULT_ADAPTER_DTYPE)
    try:
        arch = resolve_model(request.model)
    except (EstimateError, TypeError, ValueError, KeyError, AttributeError):
        return None
    if name == "autocast":
        dtype = DTYPE_ALIASES.get(str(request.dtype).lower(), str(request.dtype).lower())
        return autocast_refusal(request, dtype, arch)
    return loss_refusal(request.loss or default_loss(request.objective), arch)


def request_fields(req: EstimateRequest, config: Mapping[str, Any]) -> dict[str, Any]:
    """A request as a request document spells it (its ``lora`` and ``quant`` as mappings, a pasted
    model as its config): the inverse of :func:`request_from_fields`, which reads it back."""
    return {
        "model": _model_field(req.model, config),
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


def _model_field(model: Any, config: Mapping[str, Any]) -> Any:
    """A catalog id as it is; any other model as its config, with where that came from
    (``source``: a Hugging Face id at a commit, see :func:`model_source`) when the caller said."""
    if isinstance(model, str):
        return model
    source = model_source(model)
    return {"config": dict(config), **({"source": dict(source)} if source else {})}


def model_source(model: Any) -> Mapping[str, Any] | None:
    """Where a config came from, as the caller that read it said (``model["source"]``: the app's
    Hub reader gives the id, the commit and the checkpoint's parameter count); None: not said."""
    source = model.get("source") if isinstance(model, Mapping) else None
    return source if isinstance(source, Mapping) else None


def _lora(lora: LoraSpec) -> dict[str, Any]:
    targets = lora.target_modules  # None (peft's default) only before normalize() has resolved it
    return {"r": lora.r, "alpha": lora.alpha,
            "target_modules": targets if targets is None or isinstance(targets, str) else list(targets),
            "variant": lora.variant, "dropout": lora.dropout, "loraplus_lr_ratio": lora.loraplus_lr_ratio}


def _quant(quant: QuantSpec) -> dict[str, Any]:
    return {"type": quant.type, "double_quant": quant.double_quant, "blocksize": quant.blocksize}


def _known(prefix: str, values: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """``values`` without its None entries; a key that is not one of ``names`` is refused."""
    if not names.issuperset(values):
        unknown = sorted(set(values) - names)
        raise EstimateError(prefix + unknown[0], f"is not a field here; expected some of {sorted(names)}")
    return {k: v for k, v in values.items() if v is not None}


def _lora_from(values: Mapping[str, Any] | None) -> LoraSpec:
    given = _known("lora.", values or {}, _LORA_FIELD_SET)
    if isinstance(given.get("target_modules"), list):  # JSON has no tuples
        given["target_modules"] = tuple(given["target_modules"])
    return LoraSpec(**given)


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


def default_checkpointing(method: str, prepare_kbit: bool) -> bool:
    """Gradient checkpointing as the libraries default to it: on for QLoRA prepared by peft
    (``prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)``, peft 0.21
    ``utils/other.py``), off otherwise (transformers' ``TrainingArguments.gradient_checkpointing
    = False``)."""
    return method == "qlora" and prepare_kbit


def default_attention(arch: ArchSpec) -> AttnImplementation:
    """The attention transformers picks when ``from_pretrained`` is given none: sdpa where the
    model class supports it, else eager (transformers 5.23, ``modeling_utils``'s
    ``_check_and_adjust_attn_implementation``)."""
    return "sdpa" if arch.supports_sdpa else "eager"


# get_peft_model(autocast_adapter_dtype=True), peft 0.21's default: 16-bit adapters are upcast to fp32
DEFAULT_ADAPTER_DTYPE: AdapterDtype = "fp32"


def default_loss(objective: str) -> Loss:
    """The loss as the libraries compute it: TRL's DPOTrainer always scores through its fused LM
    head (trl 1.16 ``dpo_trainer.py``: ``model(..., fused_lm_head=True)``), the chunked loss;
    supervised fine-tuning by default through transformers' ``ForCausalLMLoss``, the standard one."""
    return "chunked" if objective == "dpo" else "standard"


def normalize(request: EstimateRequest) -> tuple[EstimateRequest, ArchSpec]:
    """Validate every field; return the request with defaults filled in, and its architecture."""
    dtype, quant, arch, attn, loss = _setting(request)
    _validate_counts(request)
    if request.new_tokens:
        _validate_decode(request, arch)
    return _filled(request, dtype, quant, attn, loss, resolved_lora(request, arch)), arch


@dataclass(frozen=True)
class ModelFacts:
    """What normalizing a request needs of a model the formulas do not know (a meta-device
    simulation answers it; ``profiler.generic.model_facts`` reads these off the built model): its
    ``model_type``, whether its class offers sdpa, the names peft can target (``linear_names``),
    the targets LoRA takes when none are named and why (``default_targets``, ``targets_note``)."""

    model_type: str
    supports_sdpa: bool
    linear_names: tuple[str, ...]
    default_targets: tuple[str, ...] | str
    targets_note: str
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def normalize_simulated(request: EstimateRequest, facts: ModelFacts) -> EstimateRequest:
    """:func:`normalize` for a model answered by simulation: the same checks of every field that
    needs no formula, its defaults read from ``facts``."""
    dtype, quant, loss = _validate_fields(request)
    _check_stored_quantization(request, quant, facts.config)
    attn = _attention(request, facts.model_type, facts.supports_sdpa, "sdpa" if facts.supports_sdpa else "eager")
    _validate_counts(request)
    lora = request.lora
    if request.method in ("lora", "qlora"):
        targets = lora.target_modules if lora.target_modules is not None else facts.default_targets
        named = (targets,) if isinstance(targets, str) else targets
        missing = [n for n in named if n != ALL_LINEAR and n not in facts.linear_names]
        if missing:
            raise EstimateError("lora.target_modules", f"{missing} not in {facts.model_type}; its Linear modules: "
                                                       f"{list(facts.linear_names)}")
        lora = replace(lora, target_modules=targets)
    return _filled(request, dtype, quant, attn, loss, lora)


def _validate_counts(request: EstimateRequest) -> None:
    """The shape, the accumulation and the tokens to decode."""
    _positive_int("batch_size", request.batch_size, MAX_BATCH)
    _positive_int("seq_len", request.seq_len, MAX_SEQ)
    _positive_int("grad_accum", request.grad_accum, MAX_GRAD_ACCUM)
    if request.new_tokens != 0:  # 0: the prefill alone
        if isinstance(request.new_tokens, int) and not isinstance(request.new_tokens, bool) and request.new_tokens < 0:
            raise EstimateError("new_tokens", f"must be 0 (the prefill alone) or a positive integer, "
                                              f"got {request.new_tokens}")
        _positive_int("new_tokens", request.new_tokens, MAX_SEQ)
    _boolean("prepare_kbit", request.prepare_kbit)


def _filled(request: EstimateRequest, dtype: str, quant: QuantSpec, attn: AttnImplementation, loss: Loss,
            lora: LoraSpec) -> EstimateRequest:
    """``request`` with its validated fields and every default filled in."""
    adapter_dtype = request.adapter_dtype or DEFAULT_ADAPTER_DTYPE
    checkpointing = request.gradient_checkpointing
    if checkpointing is None:
        checkpointing = default_checkpointing(request.method, request.prepare_kbit)
    _boolean("gradient_checkpointing", checkpointing)
    if (dtype, quant, attn, checkpointing, loss, adapter_dtype, lora) != (
            request.dtype, request.quant, request.attn_implementation, request.gradient_checkpointing, request.loss,
            request.adapter_dtype, request.lora):
        # replace(), without its overhead
        request = EstimateRequest(**{**request.__dict__, "dtype": dtype, "quant": quant, "attn_implementation": attn,
                                     "gradient_checkpointing": checkpointing, "loss": loss,
                                     "adapter_dtype": adapter_dtype, "lora": lora})
    return request


def resolved_lora(request: EstimateRequest, arch: ArchSpec) -> LoraSpec:
    """The request's adapters with ``target_modules`` left out (None) resolved to peft's default for
    ``arch`` (:func:`peft_defaults.default_targets`), so the request echo shows the modules targeted
    and reads back (``request_from_fields``) to the same estimate."""
    lora = request.lora
    if lora.target_modules is not None or request.method not in ("lora", "qlora"):
        return lora
    return replace(lora, target_modules=default_targets(arch).modules)


# Validated settings of catalog models, by every field but the shape: a service sees the same
# few settings at many batch sizes and sequence lengths.
_VALID_SETTINGS: dict[tuple[Any, ...], tuple[str, QuantSpec, ArchSpec, AttnImplementation, Loss]] = {}
MAX_VALID_SETTINGS = 4096


def _setting(request: EstimateRequest) -> tuple[str, QuantSpec, ArchSpec, AttnImplementation, Loss]:
    """:func:`_validate_setting`, remembered for requests that name a catalog model."""
    if not isinstance(request.model, str):
        return _validate_setting(request)
    lora = request.lora
    # types too: True == 1 and 1.0 == 1, but only the int is a valid count
    key = (request.model, request.method, request.dtype, lora, request.quant, request.optimizer,
           request.attn_implementation, request.device, request.sharding, request.num_gpus, request.loop,
           request.autocast, request.loss, request.objective, request.adapter_dtype, request.inference_mode,
           request.new_tokens, request.recipe,
           type(request.num_gpus), type(lora.r),
           type(lora.dropout))
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


def _validate_setting(request: EstimateRequest) -> tuple[str, QuantSpec, ArchSpec, AttnImplementation, Loss]:
    """Validate every field but the shape, the accumulation and the switches; the canonical
    dtype, the quantization with its default filled in, the architecture and its attention."""
    dtype, quant, loss = _validate_fields(request)
    arch = resolve_model(request.model)
    _check_stored_quantization(request, quant, arch.config)
    if request.method != "inference":
        _refuse("autocast", autocast_refusal(request, dtype, arch))
    _refuse("loss", loss_refusal(loss, arch))
    attn = _attention(request, arch.model_type, arch.supports_sdpa, default_attention(arch))
    return dtype, quant, arch, attn, loss


def _check_stored_quantization(request: EstimateRequest, quant: QuantSpec, config: Mapping[str, Any]) -> None:
    """A stored format the estimate cannot read is refused; a bitsandbytes one is trained as stored."""
    unread_quantization(config)
    stored = stored_quant(config)
    if stored is not None and (request.method in ("full", "lora") or quant != stored):
        raise EstimateError("quant.type", f"the checkpoint is stored in {stored.type} (bitsandbytes), which "
                                          f"from_pretrained loads as stored: method qlora (or inference) on {stored}")


def _attention(request: EstimateRequest, model_type: str, supports_sdpa: bool, default: AttnImplementation
               ) -> AttnImplementation:
    attn = request.attn_implementation or default
    if attn == "sdpa" and not supports_sdpa:
        raise EstimateError("attn_implementation",
                            f"transformers has no sdpa attention for {model_type}; use 'eager' or 'flash_attention_2'")
    return attn


def _validate_fields(request: EstimateRequest) -> tuple[str, QuantSpec, Loss]:
    """The checks of :func:`_validate_setting` that need no architecture: the canonical dtype, the
    quantization with its default filled in, and the loss."""
    _choice("method", request.method, METHODS)
    dtype = DTYPE_ALIASES.get(str(request.dtype).lower(), str(request.dtype).lower())
    _choice("dtype", dtype, COMPUTE_DTYPES)
    _choice("optimizer", request.optimizer, OPTIMIZERS)
    if request.attn_implementation is not None:
        _choice("attn_implementation", request.attn_implementation, ATTN_IMPLEMENTATIONS)
    _choice("loop", request.loop, LOOPS)
    _choice("autocast", request.autocast, AUTOCASTS)
    _choice("objective", request.objective, OBJECTIVES)
    _choice("inference_mode", request.inference_mode, INFERENCE_MODES)
    if request.inference_mode != "generate" and request.method != "inference":
        raise EstimateError("inference_mode", "is a choice of method 'inference'")
    loss = request.loss
    if loss is not None:
        _choice("loss", loss, LOSSES)
    if request.method == "inference":
        if loss not in (None, "standard") or request.objective != "sft":
            raise EstimateError("loss" if loss not in (None, "standard") else "objective",
                                "inference computes no loss: leave loss and objective at their defaults")
        loss = "standard"
    loss = loss or default_loss(request.objective)
    if request.objective == "dpo":
        _validate_dpo(request, loss)
    if request.recipe is not None:
        _choice("recipe", request.recipe, RECIPE_NAMES)
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
    adapter_dtype = request.adapter_dtype or DEFAULT_ADAPTER_DTYPE
    _choice("adapter_dtype", adapter_dtype, ADAPTER_DTYPES)
    _refuse("adapter_dtype", adapter_dtype_refusal(request, adapter_dtype))
    if request.attn_implementation == "flash_attention_2" and (request.device == "cpu" or dtype == "fp32"):
        raise EstimateError("attn_implementation", "flash_attention_2 needs device 'cuda' and fp16/bf16")
    if request.sharding != "none" and request.num_gpus == 1:
        raise EstimateError("num_gpus", f"sharding {request.sharding!r} needs num_gpus > 1")
    return dtype, quant, loss


def _validate_decode(request: EstimateRequest, arch: ArchSpec) -> None:
    """Decoding new tokens is modelled for ``generate()`` over a full-attention cache of k and v
    (transformers 5.23 ``DynamicLayer``), and over a sliding window the sequence does not pass."""
    if request.method != "inference" or request.inference_mode != "generate":
        raise EstimateError("new_tokens", "are decoded by method 'inference' in inference_mode 'generate'")
    if arch.mla is not None:
        raise EstimateError("new_tokens", f"decoding {arch.model_type}'s latent cache is not modelled yet")
    if arch.mask_materialized:
        raise EstimateError("new_tokens", f"decoding with {arch.model_type}'s materialized attention masks is not "
                                          "modelled yet")
    window = arch.smallest_window
    if window and request.seq_len + request.new_tokens > window:
        raise EstimateError("new_tokens", f"seq_len + new_tokens passes {arch.model_type}'s {window}-token window, "
                                          "where the cache drops old tokens: not modelled yet")


def _validate_dpo(request: EstimateRequest, loss: str) -> None:
    """DPO as TRL's DPOTrainer runs it: its own loop, through its fused LM head."""
    if loss != "chunked":
        raise EstimateError("loss", "DPO is modelled as TRL's DPOTrainer runs it, through its fused LM head: loss "
                                    "'chunked'")
    if request.loop != "trainer":
        raise EstimateError("loop", "DPO is modelled as TRL's DPOTrainer runs it: loop 'trainer'")


def _refuse(field_name: str, reason: str | None) -> None:
    if reason is not None:
        raise EstimateError(field_name, reason)


def autocast_refusal(request: EstimateRequest, dtype: str, arch: ArchSpec) -> str | None:
    """Why the estimate cannot model the request's autocast (None: it can). Modelled: the weights
    already in the autocast dtype (a 16-bit checkpoint, which transformers 5 loads in its own dtype
    by default), or QLoRA computing in it; plain LoRA adapters. Weights in another dtype than
    autocast's (fp32 master weights) wait until modelled, as does CUDA's autocast for the families
    where it changes more than the adapters (LayerNorm and an unpinned softmax, which CUDA's
    autocast runs in fp32)."""
    if request.autocast == "none" or request.method == "inference":
        return None
    if dtype != request.autocast:
        return (f"autocast {request.autocast} with weights in {dtype} is not modelled yet; load the weights in "
                f"{request.autocast} (dtype {request.autocast})")
    if request.autocast == "fp16" and request.method == "full":
        return ("fp16 autocast needs fp32 master weights for full fine-tuning (torch's GradScaler refuses fp16 "
                "gradients: 'Attempting to unscale FP16 gradients'), which is not modelled yet; use bf16")
    if request.method in ("lora", "qlora") and request.lora.variant in AUTOCAST_UNMODELLED_VARIANTS:
        return f"autocast with peft's {request.lora.variant} is not modelled yet"
    if request.device == "cuda" and not arch.autocast_neutral_on_cuda:
        return (f"CUDA's autocast for {arch.model_type} (LayerNorm, or a softmax in the stream's dtype, which "
                "CUDA's autocast runs in fp32) is not modelled yet")
    return None


def adapter_dtype_refusal(request: EstimateRequest, adapter_dtype: str) -> str | None:
    """Why the estimate cannot model adapters in ``adapter_dtype`` here (None: it can)."""
    if adapter_dtype == "fp32":
        return None
    if request.method not in ("lora", "qlora") or request.lora.variant in ("dora", "vera"):
        return ("16-bit adapters are modelled for LoRA and QLoRA with plain, rsLoRA or LoRA+ adapters (TRL keeps "
                "DoRA's magnitude in fp32)")
    if request.autocast not in ("none", adapter_dtype):
        return (f"{adapter_dtype} adapters under {request.autocast} autocast are not modelled (autocast would cast "
                "them on every call)")
    return None


def loss_refusal(loss: str, arch: ArchSpec) -> str | None:
    """Why the estimate cannot model ``loss`` for ``arch`` (None: it can)."""
    if loss == "chunked" and arch.model_type in UNREACHABLE_BACKBONES:
        return (f"TRL 1.16's fused LM head cannot run {arch.model_type}: it reaches the backbone through "
                "model.base_model, which transformers 5.23's Llama4ForCausalLM resolves to itself; use loss 'standard'")
    return None


# peft's variants whose adapters compute beyond lora_B(lora_A(x)), not yet measured under autocast
AUTOCAST_UNMODELLED_VARIANTS = ("dora", "vera")


def _boolean(field_name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise EstimateError(field_name, f"must be true or false, got {value!r}")


def _validate_lora(lora: LoraSpec) -> None:
    _choice("lora.variant", lora.variant, VARIANTS)
    _positive_int("lora.r", lora.r, MAX_RANK)
    if not isinstance(lora.dropout, (int, float)) or not 0 <= lora.dropout < 1:
        raise EstimateError("lora.dropout", f"must be in [0, 1), got {lora.dropout!r}")
