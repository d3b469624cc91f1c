"""Static memory: weights, quantization constants, adapters, gradients, optimizer states.

Every function returns bytes. Widths are bits; bytes = bits / 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .adapters import LoraSpec, adapter_params, adapter_tensors, vera_shared_params
from .arch import ArchSpec
from .quant import QuantizedBytes, QuantSpec, quantized_matrix_bytes
from .units import DTYPE_BITS, FP32_BITS, FP32_BYTES

ADAPTER_BITS = FP32_BITS  # peft upcasts fp16/bf16 adapters to fp32 (get_peft_model autocast_adapter_dtype=True)
# bitsandbytes 8-bit optimizers keep 32-bit state for tensors below this size (min_8bit_size).
BNB_MIN_8BIT_SIZE = 4096
# bitsandbytes blockwise 8-bit optimizer state: one fp32 absmax per 256 values (arXiv:2110.02861, Sec. 2).
BNB_OPTIM_BLOCKSIZE = 256
STEP_SCALAR_BYTES = FP32_BYTES  # torch.optim keeps `step` as a 0-dim fp32 tensor per parameter tensor
# (numel, how many) of each trainable tensor: all that gradients and optimizer states depend on.
Tensors = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class WeightBytes:
    """Weights after loading (and after peft / prepare_model_for_kbit_training)."""

    plain_bytes: int  # unquantized base parameters and the model's buffers
    quantized_bytes: int  # packed 4-bit / int8 Linear weights
    constant_bytes: int  # their quantization constants
    adapter_bytes: int  # trainable adapter parameters (fp32) and VeRA's shared buffers


def base_plain_bits(method: str, dtype: str, prepare_kbit: bool) -> int:
    """Width of base parameters that stay unquantized.

    peft's ``prepare_model_for_kbit_training`` casts every fp16/bf16 parameter that is not
    4-bit to fp32 (embeddings, norms, ``lm_head``, biases).
    """
    if method == "qlora" and prepare_kbit:
        return FP32_BITS
    return DTYPE_BITS[dtype]


def quantized_linears(arch: ArchSpec, quant: QuantSpec) -> tuple[int, QuantizedBytes]:
    """(weight params replaced, their bytes) for the Linear weights bitsandbytes quantizes."""
    params = 0
    total = QuantizedBytes(0, 0)
    for t in arch.param_tensors():
        if not t.quantizable:
            continue
        out_features, in_features = t.shape
        params += t.params
        total = total + quantized_matrix_bytes(in_features, out_features, quant).times(t.count)
    return params, total


@lru_cache(maxsize=1024)
def weight_bytes(arch: ArchSpec, method: str, dtype: str, quant: QuantSpec, lora: LoraSpec | None,
                 prepare_kbit: bool, adapter_bits: int = ADAPTER_BITS) -> WeightBytes:
    """Bytes of every parameter (and adapter buffer) once the model is ready to train."""
    plain_bits = base_plain_bits(method, dtype, prepare_kbit)
    q_params, q_bytes = quantized_linears(arch, quant) if quant.enabled else (0, QuantizedBytes(0, 0))
    plain = math.ceil((arch.total_params - q_params) * plain_bits / 8 + arch.buffer_bytes(DTYPE_BITS[dtype]))
    adapters = 0
    if method in ("lora", "qlora") and lora is not None:
        adapters = math.ceil((adapter_params(arch, lora) + vera_shared_params(arch, lora)) * adapter_bits / 8)
    return WeightBytes(plain, q_bytes.weight_bytes, q_bytes.constant_bytes, adapters)


@lru_cache(maxsize=1024)
def trainable_tensors(arch: ArchSpec, method: str, lora: LoraSpec | None) -> Tensors:
    """(numel, how many) of each trainable parameter tensor: the model's own under full
    fine-tuning, peft's adapters under LoRA."""
    if method == "full":
        return tuple((t.numel, t.count) for t in arch.param_tensors())
    if method in ("lora", "qlora") and lora is not None:
        return tuple((t.numel, count) for t, count in adapter_tensors(arch, lora))
    return ()


@lru_cache(maxsize=1024)
def stepped_tensors(arch: ArchSpec, method: str, lora: LoraSpec | None) -> Tensors:
    """The trainable tensors that get a gradient and optimizer state in a step on text: all but a
    multimodal wrapper's tower and projector (and adapters on them), which text never reaches
    (their ``.grad`` stays None, which AdamW skips)."""
    if method == "full":
        return tuple((t.numel, t.count) for t in arch.param_tensors() if t.role != "tower")
    if method in ("lora", "qlora") and lora is not None:
        return tuple((t.numel, count) for t, count in adapter_tensors(arch, lora, text_only=True))
    return ()


@lru_cache(maxsize=1024)
def trainable_params(tensors: Tensors) -> int:
    return sum(numel * count for numel, count in tensors)


def gradient_bytes(tensors: Tensors, bits: int) -> int:
    """One gradient per trainable parameter, in the parameter's dtype."""
    return math.ceil(trainable_params(tensors) * bits / 8)


@dataclass(frozen=True)
class OptimizerBytes:
    """Optimizer state and the transient of its step."""

    state_bytes: int  # persistent after the first step
    step_temp_bytes: int  # extra bytes live during optimizer.step()
    paged: bool  # states in CUDA unified memory (bitsandbytes paged optimizers)


def adam_state_bytes(tensors: Tensors, bits: int, device: str) -> int:
    """AdamW: ``exp_avg`` and ``exp_avg_sq`` like each parameter, plus a fp32 ``step`` scalar.

    Loshchilov & Hutter, arXiv:1711.05101, Alg. 2 (two moments). ``step`` lives on the host
    for CUDA parameters (torch.optim default, not capturable), so it counts only on CPU.
    """
    moments = 2 * math.ceil(trainable_params(tensors) * bits / 8)
    steps = sum(c for _, c in tensors) * STEP_SCALAR_BYTES if device == "cpu" else 0
    return moments + steps


def adam8bit_state_bytes(tensors: Tensors, bits: int) -> int:
    """bitsandbytes 8-bit AdamW: uint8 moments with fp32 absmax per 256 values.

    Dettmers et al., arXiv:2110.02861, Sec. 2 (block-wise quantization). Tensors with fewer than
    4096 elements keep 32-bit moments.
    """
    total = 0
    for numel, count in tensors:
        if numel >= BNB_MIN_8BIT_SIZE:
            per = 2 * (numel + math.ceil(numel / BNB_OPTIM_BLOCKSIZE) * FP32_BYTES)
        else:
            per = 2 * numel * FP32_BYTES
        total += per * count
    return total


@lru_cache(maxsize=1024)
def optimizer_bytes(tensors: Tensors, bits: int, optimizer: str, device: str) -> OptimizerBytes:
    """State and step transient for ``optimizer`` over the trainable ``tensors``.

    On CUDA torch's AdamW defaults to the foreach implementation, whose ``_foreach_sqrt``
    allocates one ``exp_avg_sq``-sized temporary for the whole group; on CPU it runs per
    tensor, where ``exp_avg_sq.sqrt() / bias_correction`` briefly holds two copies of the
    largest tensor's state. The fused implementation (``AdamW(fused=True)``, Hugging Face
    Trainer's default ``adamw_torch_fused``) updates in place and keeps ``step`` on the device.
    """
    if not tensors:
        return OptimizerBytes(0, 0, False)
    largest = max(numel for numel, _ in tensors)
    paged = optimizer.startswith("paged_") and device == "cuda"
    if optimizer == "adamw_fused":
        # torch's fused kernel updates in place; its ``step`` scalars live on the parameters' device
        return OptimizerBytes(adam_state_bytes(tensors, bits, "cpu"), 0, False)
    if optimizer in ("adamw", "paged_adamw"):
        state = adam_state_bytes(tensors, bits, device)
        if device == "cuda" and optimizer == "adamw":
            temp = math.ceil(trainable_params(tensors) * bits / 8)
        else:
            temp = 2 * math.ceil(largest * bits / 8)
        return OptimizerBytes(state, temp, paged)
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return OptimizerBytes(adam8bit_state_bytes(tensors, bits), 0, paged)
    if optimizer == "sgd_momentum":
        return OptimizerBytes(math.ceil(trainable_params(tensors) * bits / 8), 0, False)
    return OptimizerBytes(0, 0, False)  # plain SGD keeps no state
