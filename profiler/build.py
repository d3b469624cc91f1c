"""Build what a fine-tuning run builds: the model (random weights from a config, or a local
checkpoint), quantized and wrapped by peft as the request says, and its optimizer.

Memory does not depend on weight values, so a model built from its ``config.json`` with random
weights takes what the real checkpoint would. Quantized bases go through ``from_pretrained`` with
a ``BitsAndBytesConfig`` (the path users take), from a random checkpoint saved to a temporary
directory when no local checkpoint is given.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tunefit.estimator import EstimateRequest, QuantSpec, get_model
from tunefit.estimator.chunked_loss import DPO_OUTPUTS, REFERENCE_OUTPUTS, SFT_OUTPUTS

if TYPE_CHECKING:
    from bitsandbytes.optim.adamw import AdamW8bit, PagedAdamW, PagedAdamW8bit
    from peft import LoraConfig, VeraConfig
    from transformers import PreTrainedModel

    AdamClass = type[torch.optim.AdamW | AdamW8bit | PagedAdamW | PagedAdamW8bit]

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LEARNING_RATE = 1e-4  # any value: memory does not depend on it


class BuildError(ValueError):
    """The request cannot be built here (unknown source, method not available on this device)."""


def source_config(model: Any, allow_hub: bool = False) -> tuple[dict[str, Any], str | None]:
    """(config dict, local checkpoint directory or None) for a request's ``model``.

    A catalog id or a config dict gives a config; ``{"checkpoint": path}`` a local directory and
    the config its ``config.json`` holds; any other string is a Hugging Face hub id, read only when
    ``allow_hub`` (never in tests).
    """
    if isinstance(model, Mapping) and "checkpoint" in model:
        path = Path(str(model["checkpoint"]))
        if not (path / "config.json").is_file():
            raise BuildError(f"no config.json in checkpoint directory {path}")
        return json.loads((path / "config.json").read_text()), str(path)
    if isinstance(model, Mapping):
        return dict(model.get("config", model)), None
    try:
        return dict(get_model(model).config), None
    except Exception:
        if not allow_hub:
            raise
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, trust_remote_code=False).to_dict(), None


def model_class(config_dict: dict[str, Any]) -> Any:
    """transformers' auto class that builds ``config_dict``'s model with its LM head:
    AutoModelForCausalLM, or AutoModelForImageTextToText for a multimodal wrapper the first does
    not map (mistral3)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = config_dict.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return AutoModelForCausalLM if causal else AutoModelForImageTextToText


def load_model(request: EstimateRequest, device: torch.device, allow_hub: bool = False) -> PreTrainedModel:
    """The base model in ``request.dtype`` on ``device`` (quantized for qlora / a quantized inference)."""
    config_dict, checkpoint = source_config(request.model, allow_hub)
    dtype = TORCH_DTYPES[request.dtype]
    # A checkpoint's own modelling code (``auto_map``) never runs: only transformers' classes.
    kwargs = {"dtype": dtype, "attn_implementation": request.attn_implementation, "trust_remote_code": False}
    quant = request.quant
    if quant is not None and quant.enabled:
        if checkpoint is None:
            with tempfile.TemporaryDirectory() as tmp:
                random_model(config_dict, **kwargs).save_pretrained(tmp)
                return _load_quantized(tmp, model_class(config_dict), quant, kwargs, device)
        return _load_quantized(checkpoint, model_class(config_dict), quant, kwargs, device)
    if checkpoint is not None:
        model: PreTrainedModel = model_class(config_dict).from_pretrained(checkpoint, local_files_only=True,
                                                                          **kwargs)
        # transformers wraps ``to`` with functools.wraps, whose typeshed type does not bind ``self``
        return model.to(device)  # type: ignore[arg-type]
    with device:
        return random_model(config_dict, **kwargs)


def random_model(config_dict: dict[str, Any], **kwargs: Any) -> PreTrainedModel:
    """transformers' causal LM for ``config_dict`` with random weights, built on the current
    default device (``with device:``)."""
    from transformers import AutoConfig

    model: PreTrainedModel = model_class(config_dict).from_config(AutoConfig.for_model(**config_dict), **kwargs)
    return model


def vocab_size(model: PreTrainedModel) -> int:
    """The size of the model's token vocabulary (a multimodal model's text part's)."""
    return int(model.config.get_text_config().vocab_size)


def _load_quantized(path: str, auto_class: Any, quant: QuantSpec, kwargs: dict[str, Any],
                    device: torch.device) -> PreTrainedModel:
    """The checkpoint at ``path`` quantized as ``quant`` says, computing in the model's dtype."""
    from transformers import BitsAndBytesConfig

    if quant.type == "int8":
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    else:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.type,
                                 bnb_4bit_use_double_quant=quant.double_quant, bnb_4bit_compute_dtype=kwargs["dtype"])
    model: PreTrainedModel = auto_class.from_pretrained(
        path, quantization_config=bnb, device_map=str(device), local_files_only=True, **kwargs)
    return model


def prepare_for_training(model: PreTrainedModel, request: EstimateRequest) -> torch.nn.Module:
    """Make the parameters that train trainable: all (full), or peft adapters (lora, qlora)."""
    gc_kwargs = {"use_reentrant": False}
    if request.method == "qlora" and request.prepare_kbit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=request.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif request.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    trained: torch.nn.Module = model
    if request.method in ("lora", "qlora"):
        from peft import get_peft_model

        trained = get_peft_model(model, peft_config(request))
        if request.adapter_dtype not in (None, "fp32"):  # None: peft's fp32
            cast_adapters(trained, TORCH_DTYPES[request.adapter_dtype])
    model.config.use_cache = False  # the base model's config, which peft's wrapper reads too
    trained.train()  # from_pretrained returns eval mode, where transformers skips gradient checkpointing
    if request.loss == "chunked":
        add_loss_head(model, DPO_OUTPUTS if request.objective == "dpo" else SFT_OUTPUTS)
    return trained


def add_loss_head(model: PreTrainedModel, outputs: tuple[str, ...]) -> None:
    """TRL's fused LM head on the base model, as its trainers add it after peft has wrapped the
    model (``add_fused_lm_head(model.get_base_model(), outputs=...)``, asking for the outputs their
    metrics read): a forward called with ``fused_lm_head=True`` scores the labels in tiles, never
    building the logits."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=outputs)


def reference_model(request: EstimateRequest, device: torch.device) -> PreTrainedModel | None:
    """DPO's frozen reference as TRL's DPOTrainer builds it: none for adapters (the policy with its
    adapters disabled), else a second copy of the model in its dtype, frozen, in eval mode, with a
    fused head asking for the log-probs only (trl 1.16 ``DPOTrainer.__init__``)."""
    if request.objective != "dpo" or request.method != "full":
        return None
    torch.manual_seed(0)
    reference = load_model(request, device)
    reference.requires_grad_(False)
    add_loss_head(reference, REFERENCE_OUTPUTS)
    return reference.eval()


def cast_adapters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """The trainable parameters in ``dtype``, as TRL 1.16's trainers cast a quantized model's after
    ``get_peft_model`` (``param.data = param.data.to(torch.bfloat16)``; DoRA's magnitude excepted)."""
    for name, param in model.named_parameters():
        if param.requires_grad and "lora_magnitude_vector" not in name:
            param.data = param.data.to(dtype)


def peft_config(request: EstimateRequest) -> LoraConfig | VeraConfig:
    """peft's config for the (normalized) request's adapter settings: its targets named, as the
    estimator resolved them (peft's own default raises for some families, ``estimator.peft_defaults``)."""
    lora = request.lora
    assert lora.target_modules is not None, "normalize() first: it resolves the default targets"
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    if lora.variant == "vera":
        from peft import VeraConfig

        return VeraConfig(r=lora.r, target_modules=targets, vera_dropout=lora.dropout)
    from peft import LoraConfig

    # peft annotates lora_alpha as int but only divides by it: a fractional alpha scales as given
    alpha: Any = lora.alpha
    return LoraConfig(r=lora.r, lora_alpha=alpha, target_modules=targets, lora_dropout=lora.dropout,
                      use_rslora=lora.variant == "rslora", use_dora=lora.variant == "dora")


def make_optimizer(model: torch.nn.Module, request: EstimateRequest,
                   foreach: bool | None = None) -> torch.optim.Optimizer:
    """The request's optimizer over the trainable parameters (LoRA+ gives B a larger learning rate).

    ``foreach`` None lets torch choose, as a training script does (the foreach implementation on
    CUDA, per tensor on CPU); a simulation on the meta device passes the target's choice."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = request.optimizer
    if name in ("adamw", "adamw_fused", "paged_adamw", "adamw_8bit", "paged_adamw_8bit"):
        cls = _adam_class(name)
        torch_kwargs: dict[str, Any] = {"foreach": foreach} if name == "adamw" else {}
        if name == "adamw_fused":
            torch_kwargs = {"fused": True}
        if request.method in ("lora", "qlora") and request.lora.variant == "lora+":
            from peft import PeftModel
            from peft.optimizers import create_loraplus_optimizer

            assert isinstance(model, PeftModel)  # prepare_for_training wrapped it for lora / qlora
            return create_loraplus_optimizer(model, optimizer_cls=cls, lr=LEARNING_RATE,
                                             loraplus_lr_ratio=request.lora.loraplus_lr_ratio, **torch_kwargs)
        return cls(params, lr=LEARNING_RATE, **torch_kwargs)
    momentum = 0.9 if name == "sgd_momentum" else 0.0
    return torch.optim.SGD(params, lr=LEARNING_RATE, momentum=momentum, foreach=foreach)


def _adam_class(name: str) -> AdamClass:
    if name in ("adamw", "adamw_fused"):
        return torch.optim.AdamW
    from bitsandbytes.optim.adamw import AdamW8bit, PagedAdamW, PagedAdamW8bit

    classes: dict[str, AdamClass] = {"adamw_8bit": AdamW8bit, "paged_adamw": PagedAdamW,
                                     "paged_adamw_8bit": PagedAdamW8bit}
    return classes[name]
