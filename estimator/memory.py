"""Static memory: weights, quantization constants, adapters, gradients, optimizer states.

Every function returns bytes. Widths are bits; bytes = bits / 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .adapters import LoraSpec, adapter_params, resolve_targets, vera_shared_params
from .arch import ArchSpec, ParamTarget
from .quant import QuantizedBytes, QuantSpec, quantized_matrix_bytes
from .units import DTYPE_BITS

FP32_BITS = 32
ADAPTER_BITS = 32  # peft upcasts fp16/bf16 adapters to fp32 (get_peft_model autocast_adapter_dtype=True)
# bitsandbytes 8-bit optimizers keep 32-bit state for tensors below this size (min_8bit_size).
BNB_MIN_8BIT_SIZE = 4096
# bitsandbytes blockwise 8-bit optimizer state: one fp32 absmax per 256 values (arXiv:2110.02861, Sec. 2).
BNB_OPTIM_BLOCKSIZE = 256
STEP_SCALAR_BYTES = 4  # torch.optim keeps `step` as a 0-dim fp32 tensor per parameter tensor


@dataclass(frozen=True)
class WeightBytes:
    """Weights after loading (and after peft / prepare_model_for_kbit_training)."""

    plain_bytes: int  # unquantized base parameters and the model's buffers
    quantized_bytes: int  # packed 4-bit / int8 Linear weights
    constant_bytes: int  # their quantization constants
    adapter_bytes: int  # trainable adapter parameters (fp32) and VeRA's shared buffers


def base_plain_bits(method: str, dtype: str, quant: QuantSpec, prepare_kbit: bool) -> int:
    """Width of base parameters that stay unquantized.

    peft's ``prepare_model_for_kbit_training`` casts every fp16/bf16 parameter that is not
    4-bit to fp32 (embeddings, norms, ``lm_head``, biases).
    """
    if method == "qlora" and prepare_kbit:
        return FP32_BITS
    return DTYPE_BITS[dtype]


def quantized_linears(arch: ArchSpec, quant: QuantSpec) -> tuple[int, QuantizedBytes]:
    """(weight params replaced, their bytes) for the Linears bitsandbytes quantizes."""
    params = 0
    total = QuantizedBytes(0, 0)
    layer = [(m, arch.num_hidden_layers) for m in arch.layer_linears]
    top = [(m, 1) for m in arch.model_linears]
    for m, count in layer + top:
        if not m.quantizable:
            continue
        params += m.weight_params * count
        total = total + quantized_matrix_bytes(m.in_features, m.out_features, quant).times(count)
    return params, total


@lru_cache(maxsize=1024)
def weight_bytes(arch: ArchSpec, method: str, dtype: str, quant: QuantSpec, lora: LoraSpec | None,
                 prepare_kbit: bool) -> WeightBytes:
    """Bytes of every parameter (and adapter buffer) once the model is ready to train."""
    plain_bits = base_plain_bits(method, dtype, quant, prepare_kbit)
    q_params, q_bytes = quantized_linears(arch, quant) if quant.enabled else (0, QuantizedBytes(0, 0))
    plain = math.ceil((arch.total_params - q_params) * plain_bits / 8 + arch.buffer_bytes(DTYPE_BITS[dtype]))
    adapters = 0
    if method in ("lora", "qlora") and lora is not None:
        adapters = math.ceil((adapter_params(arch, lora) + vera_shared_params(arch, lora)) * ADAPTER_BITS / 8)
    return WeightBytes(plain, q_bytes.weight_bytes, q_bytes.constant_bytes, adapters)


@lru_cache(maxsize=1024)
def trainable_tensors(arch: ArchSpec, method: str, lora: LoraSpec | None) -> tuple[tuple[int, int], ...]:
    """(numel, how many) of each trainable parameter tensor."""
    if method == "full":
        return tuple(arch_param_tensors(arch))
    if method in ("lora", "qlora") and lora is not None:
        return tuple(adapter_tensors(arch, lora))
    return ()


def arch_param_tensors(arch: ArchSpec) -> list[tuple[int, int]]:
    """(numel, count) of every parameter tensor of the model (tied head counted once)."""
    L, h = arch.num_hidden_layers, arch.hidden_size
    tensors: tuple[tuple[int, int], ...] = [(arch.vocab_size * h, 1)]
    if arch.position_embeddings:
        tensors.append((arch.position_embeddings * h, 1))
    for m in arch.layer_linears:
        tensors.append((m.weight_params, L))
        if m.bias:
            tensors.append((m.out_features, L))
    for n in arch.layer_norms:
        if n.affine:
            tensors.append((n.size, L * (2 if n.bias else 1)))
    if arch.layer_expert_params:
        per_expert_matrix = arch.layer_expert_params // 3
        tensors += [(2 * per_expert_matrix, L), (per_expert_matrix, L)]  # gate_up_proj, down_proj
    if arch.layer_router_params:
        tensors.append((arch.layer_router_params, L))
    for m in arch.model_linears:
        tensors.append((m.weight_params, 1))
    if arch.final_norm and arch.final_norm.affine:
        tensors.append((arch.final_norm.size, 2 if arch.final_norm.bias else 1))
    if arch.lm_head_params:
        tensors.append((arch.lm_head_params, 1))
    return tensors


def adapter_tensors(arch: ArchSpec, lora: LoraSpec) -> list[tuple[int, int]]:
    """(numel, count) of peft's trainable adapter tensors."""
    r = lora.r
    tensors: tuple[tuple[int, int], ...] = []
    for m, count in resolve_targets(arch, lora):
        d, k = m.out_features, m.in_features
        if isinstance(m, ParamTarget):
            stacked_rank = r * m.rank_factor * m.experts
            tensors += [(stacked_rank * k, count), (d * stacked_rank, count)]  # ParamWrapper lora_A, lora_B
            continue
        if lora.variant == "vera":
            tensors += [(d, count), (r, count)]  # lambda_b, lambda_d
            continue
        tensors += [(r * k, count), (d * r, count)]  # lora_A, lora_B
        if lora.variant == "dora":
            tensors.append((d, count))  # lora_magnitude_vector
    return tensors


@lru_cache(maxsize=1024)
def trainable_params(tensors: tuple[tuple[int, int], ...]) -> int:
    return sum(numel * count for numel, count in tensors)


def gradient_bytes(tensors: tuple[tuple[int, int], ...], bits: int) -> int:
    """One gradient per trainable parameter, in the parameter's dtype."""
    return math.ceil(trainable_params(tensors) * bits / 8)


@dataclass(frozen=True)
class OptimizerBytes:
    """Optimizer state and the transient of its step."""

    state_bytes: int  # persistent after the first step
    step_temp_bytes: int  # extra bytes live during optimizer.step()
    paged: bool  # states in CUDA unified memory (bitsandbytes paged optimizers)


def adam_state_bytes(tensors: tuple[tuple[int, int], ...], bits: int, device: str) -> int:
    """AdamW: ``exp_avg`` and ``exp_avg_sq`` like each parameter, plus a fp32 ``step`` scalar.

    Loshchilov & Hutter, arXiv:1711.05101, Alg. 2 (two moments). ``step`` lives on the host
    for CUDA parameters (torch.optim default, not capturable), so it counts only on CPU.
    """
    moments = 2 * math.ceil(trainable_params(tensors) * bits / 8)
    steps = sum(c for _, c in tensors) * STEP_SCALAR_BYTES if device == "cpu" else 0
    return moments + steps


def adam8bit_state_bytes(tensors: tuple[tuple[int, int], ...], bits: int) -> int:
    """bitsandbytes 8-bit AdamW: uint8 moments with fp32 absmax per 256 values.

    Dettmers et al., arXiv:2110.02861, Sec. 2 (block-wise quantization). Tensors with fewer than
    4096 elements keep 32-bit moments.
    """
    total = 0
    for numel, count in tensors:
        if numel >= BNB_MIN_8BIT_SIZE:
            per = 2 * (numel + math.ceil(numel / BNB_OPTIM_BLOCKSIZE) * 4)
        else:
            per = 2 * numel * 4
        total += per * count
    return total


@lru_cache(maxsize=1024)
def optimizer_bytes(tensors: tuple[tuple[int, int], ...], bits: int, optimizer: str, device: str) -> OptimizerBytes:
    """State and step transient for ``optimizer`` over the trainable ``tensors``.

    On CUDA torch's AdamW defaults to the foreach implementation, whose ``_foreach_sqrt``
    allocates one ``exp_avg_sq``-sized temporary for the whole group; on CPU it runs per
    tensor, where ``exp_avg_sq.sqrt() / bias_correction`` briefly holds two copies of the
    largest tensor's state.
    """
    if not tensors:
        return OptimizerBytes(0, 0, False)
    largest = max(numel for numel, _ in tensors)
    paged = optimizer.startswith("paged_") and device == "cuda"
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
