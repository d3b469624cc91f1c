"""A checkpoint stored quantized, read as ``from_pretrained`` loads it.

A config whose ``quantization_config`` names bitsandbytes (``unsloth/...-bnb-4bit``, a model saved
after ``BitsAndBytesConfig(load_in_4bit=True)``) is loaded quantized whatever the caller asks:
transformers 5.23 ``modeling_utils.from_pretrained`` takes the checkpoint's own
``quantization_config`` over one passed in ("The model you're loading already has a
``quantization_config`` attribute ... will be used"), and ``integrations/bitsandbytes.py`` swaps
its Linears for ``Linear4bit`` / ``Linear8bitLt``. So LoRA on it is QLoRA, and full fine-tuning
is refused (transformers' ``Trainer``: "You cannot perform fine-tuning on purely quantized models").

The others, each as transformers 5.23 loads it where it can be trained:

- ``mxfp4`` (gpt-oss): ``quantizer_mxfp4.py`` says it cannot be trained ("please consider dequantizing
  the model first by passing quantization_config=Mxfp4Config(dequantize=True)"); dequantized, every
  weight is in the compute dtype.
- ``fp8`` (fine-grained, DeepSeek-V3, Qwen3-FP8): ``quantizer_finegrained_fp8.py``
  ``validate_environment`` dequantizes to bf16 on a CPU and on GPUs of compute capability below 8.9;
  on 8.9 and above it keeps FP8 weights with their block scales, which is not modelled yet (the
  estimate assumes them dequantized, and says so: high by about half the weights there).
- GPTQ, AWQ and the other weight-only formats run through their own kernels and peft's own LoRA
  layers for them (peft 0.21.2 ``tuners/lora/gptq.py``, ``awq.py``): not modelled yet, refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import EstimateError
from .quant import Blocksize, QuantSpec, QuantType

# BitsAndBytesConfig's defaults (transformers 5.23 ``utils/quantization_config.py``): fp4 without
# double quantization; bitsandbytes' blocksize 64 (``quantize_4bit``).
BNB_DEFAULT_4BIT_TYPE = "fp4"
FOUR_BIT_TYPES: dict[str, QuantType] = {"nf4": "nf4", "fp4": "fp4"}
BNB_BLOCKSIZE: Blocksize = 64
# Modules bitsandbytes leaves unquantized by default: the output head (``get_keys_to_not_convert``).
DEFAULT_SKIPPED = frozenset({"lm_head"})


def quantization_config(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    value = config.get("quantization_config")
    return value if isinstance(value, Mapping) else None


def stored_quant(config: Mapping[str, Any]) -> QuantSpec | None:
    """The bitsandbytes quantization a checkpoint is stored in (None: not bitsandbytes)."""
    qc = quantization_config(config)
    if qc is None or qc.get("quant_method") != "bitsandbytes":
        return None
    skipped = qc.get("llm_int8_skip_modules") or []
    if not isinstance(skipped, list) or not DEFAULT_SKIPPED.issuperset(skipped):
        raise EstimateError("model.config.quantization_config",
                            f"leaves {skipped!r} unquantized (a dynamic quantization): not modelled yet")
    if qc.get("load_in_4bit"):
        kind = qc.get("bnb_4bit_quant_type") or BNB_DEFAULT_4BIT_TYPE
        if kind not in FOUR_BIT_TYPES:
            raise EstimateError("model.config.quantization_config", f"bnb_4bit_quant_type {kind!r} is not nf4 or fp4")
        return QuantSpec(type=FOUR_BIT_TYPES[kind], double_quant=bool(qc.get("bnb_4bit_use_double_quant")),
                         blocksize=BNB_BLOCKSIZE)
    if qc.get("load_in_8bit"):
        return QuantSpec(type="int8", double_quant=False, blocksize=BNB_BLOCKSIZE)
    return None


# Stored quantizations whose checkpoints train dequantized (see the module's docstring).
DEQUANTIZED_METHODS = ("mxfp4", "fp8")


def unread_quantization(config: Mapping[str, Any]) -> str | None:
    """The ``quant_method`` of a stored quantization the estimate reads as dequantized (None: none,
    or bitsandbytes); one it cannot read at all is refused."""
    qc = quantization_config(config)
    method = qc.get("quant_method") if qc is not None else None
    if method in (None, "bitsandbytes"):
        return None
    if method not in DEQUANTIZED_METHODS:
        raise EstimateError("model.config.quantization_config",
                            f"the checkpoint is stored in {method}, which transformers loads through its own kernels "
                            "and peft adapts through its own layers: not modelled yet; name the unquantized model")
    return str(method)


def as_stored(values: dict[str, Any], config: Mapping[str, Any] | None, default_method: str) -> dict[str, Any]:
    """Request fields for a model stored in bitsandbytes: method ``lora`` (or none given, which
    defaults to LoRA) becomes ``qlora`` on the stored quantization, which overrides any given;
    ``full`` is refused."""
    stored = stored_quant(config) if config is not None else None
    if stored is None:
        return values
    method = values.get("method") or default_method
    if method == "full":
        raise EstimateError("method", f"the checkpoint is stored in {stored.type} (bitsandbytes): transformers' "
                                      "Trainer refuses to fine-tune a purely quantized model; train adapters "
                                      "(method qlora) or name the unquantized checkpoint")
    return {**values, "method": "qlora" if method == "lora" else method,
            "quant": {"type": stored.type, "double_quant": stored.double_quant, "blocksize": stored.blocksize}}
