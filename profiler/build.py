"""Build what a fine-tuning run builds: the model (random weights from a config, or a local
checkpoint), quantized and wrapped by peft as the request says, and its optimizer.

Memory does not depend on weight values, so a model built from its ``config.json`` with random
weights takes what the real checkpoint would. Quantized bases go through ``from_pretrained`` with
a ``BitsAndBytesConfig`` (the path users take), from a random checkpoint saved to a temporary
directory when no local checkpoint is given.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tunefit.estimator import EstimateRequest, get_model

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LEARNING_RATE = 1e-4  # any value: memory does not depend on it


class BuildError(ValueError):
    """The request cannot be built here (unknown source, method not available on this device)."""


def source_config(model: Any, allow_hub: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """(config dict, local checkpoint directory) for a request's ``model``.

    A catalog id or a config dict gives a config; ``{"checkpoint": path}`` a local directory; any
    other string is a Hugging Face hub id, read only when ``allow_hub`` (never in tests).
    """
    if isinstance(model, Mapping) and "checkpoint" in model:
        path = Path(str(model["checkpoint"]))
        if not (path / "config.json").is_file():
            raise BuildError(f"no config.json in checkpoint directory {path}")
        return None, str(path)
    if isinstance(model, Mapping):
        return dict(model.get("config", model)), None
    try:
        return dict(get_model(model).config), None
    except Exception:
        if not allow_hub:
            raise
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, trust_remote_code=False).to_dict(), None


def load_model(request: EstimateRequest, device: torch.device, allow_hub: bool = False) -> torch.nn.Module:
    """The base model in ``request.dtype`` on ``device`` (quantized for qlora / a quantized inference)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict, checkpoint = source_config(request.model, allow_hub)
    dtype = TORCH_DTYPES[request.dtype]
    # A checkpoint's own modelling code (``auto_map``) never runs: only transformers' classes.
    kwargs = {"dtype": dtype, "attn_implementation": request.attn_implementation, "trust_remote_code": False}
    quant = request.quant
    if quant is not None and quant.enabled:
        if checkpoint is None:
            with tempfile.TemporaryDirectory() as tmp:
                _random_model(config_dict, kwargs).save_pretrained(tmp)
                return _load_quantized(tmp, request, kwargs, device)
        return _load_quantized(checkpoint, request, kwargs, device)
    if checkpoint is not None:
        return AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True, **kwargs).to(device)
    config = AutoConfig.for_model(**config_dict)
    with device:
        return AutoModelForCausalLM.from_config(config, **kwargs)


def _random_model(config_dict: dict[str, Any], kwargs: dict[str, Any]) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config_dict), **kwargs)


def _load_quantized(path: str, request: EstimateRequest, kwargs: dict[str, Any], device: torch.device):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = request.quant
    if quant.type == "int8":
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    else:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant.type,
                                 bnb_4bit_use_double_quant=quant.double_quant,
                                 bnb_4bit_compute_dtype=TORCH_DTYPES[request.dtype])
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map=str(device),
                                                local_files_only=True, **kwargs)


def prepare_for_training(model: torch.nn.Module, request: EstimateRequest) -> torch.nn.Module:
    """Make the parameters that train trainable: all (full), or peft adapters (lora, qlora)."""
    gc_kwargs = {"use_reentrant": False}
    if request.method == "qlora" and request.prepare_kbit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=request.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif request.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    if request.method in ("lora", "qlora"):
        from peft import get_peft_model

        model = get_peft_model(model, peft_config(request))
    model.config.use_cache = False
    model.train()  # from_pretrained returns eval mode, where transformers skips gradient checkpointing
    return model


def peft_config(request: EstimateRequest):
    """peft's config for the request's adapter settings."""
    lora = request.lora
    targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    if lora.variant == "vera":
        from peft import VeraConfig

        return VeraConfig(r=lora.r, target_modules=targets, vera_dropout=lora.dropout)
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=targets, lora_dropout=lora.dropout,
                      use_rslora=lora.variant == "rslora", use_dora=lora.variant == "dora")


def make_optimizer(model: torch.nn.Module, request: EstimateRequest,
                   foreach: bool | None = None) -> torch.optim.Optimizer:
    """The request's optimizer over the trainable parameters (LoRA+ gives B a larger learning rate).

    ``foreach`` None lets torch choose, as a training script does (the foreach implementation on
    CUDA, per tensor on CPU); a simulation on the meta device passes the target's choice."""
    params = [p for p in model.parameters() if p.requires_grad]
    name = request.optimizer
    if name in ("adamw", "paged_adamw", "adamw_8bit", "paged_adamw_8bit"):
        cls = _adam_class(name)
        torch_kwargs = {"foreach": foreach} if name == "adamw" else {}
        if request.method in ("lora", "qlora") and request.lora.variant == "lora+":
            from peft.optimizers import create_loraplus_optimizer

            return create_loraplus_optimizer(model, optimizer_cls=cls, lr=LEARNING_RATE,
                                             loraplus_lr_ratio=request.lora.loraplus_lr_ratio, **torch_kwargs)
        return cls(params, lr=LEARNING_RATE, **torch_kwargs)
    momentum = 0.9 if name == "sgd_momentum" else 0.0
    return torch.optim.SGD(params, lr=LEARNING_RATE, momentum=momentum, foreach=foreach)


def _adam_class(name: str):
    if name == "adamw":
        return torch.optim.AdamW
    import bitsandbytes as bnb

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw": bnb.optim.PagedAdamW,
            "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}[name]
