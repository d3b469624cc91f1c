"""Bytes of weights as bitsandbytes stores them: NF4/FP4 (4-bit) and LLM.int8.

bitsandbytes ``quantize_4bit`` (0.4x+) lays one quantized Linear out as:
- packed weight: ``ceil(n/2)`` uint8 (two 4-bit codes per byte);
- ``absmax``: one fp32 per block of ``blocksize`` (64) weights;
- ``code``: the 16-entry fp32 NF4/FP4 table, one per layer;
- with double quantization (``compress_statistics``): ``absmax`` itself is quantized blockwise
  (blocksize 256) to uint8, plus a fp32 ``absmax`` per 256 blocks, a fp32 ``offset`` scalar and a
  copy of the 256-entry fp32 dynamic map.
Dettmers et al., arXiv:2305.14314, Sec. 3 (NF4, Double Quantization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from .units import FP32_BITS, tensor_bytes

NF4_CODE_ENTRIES = 16  # 2**4 levels, stored as fp32 (bitsandbytes get_4bit_type)
DYNAMIC_MAP_ENTRIES = 256  # 8-bit dynamic map copied into each nested QuantState
DQ_BLOCKSIZE = 256  # second-level blocksize, arXiv:2305.14314 Sec. 3
UINT8_BITS = 8
INT8_BITS = 8
Blocksize = Literal[32, 64, 128, 256, 512, 1024, 2048, 4096]  # accepted by bitsandbytes quantize_4bit
QuantType = Literal["none", "nf4", "fp4", "int8"]
BLOCKSIZES: tuple[Blocksize, ...] = get_args(Blocksize)
QUANT_TYPES: tuple[QuantType, ...] = get_args(QuantType)


@dataclass(frozen=True)
class QuantSpec:
    """Quantization of the frozen base (bitsandbytes ``BitsAndBytesConfig``)."""

    type: QuantType = "nf4"
    double_quant: bool = True
    blocksize: Blocksize = 64

    @property
    def is_4bit(self) -> bool:
        return self.type in ("nf4", "fp4")

    @property
    def enabled(self) -> bool:
        return self.type != "none"


@dataclass(frozen=True)
class QuantizedBytes:
    """Bytes of one or more quantized matrices: packed weights and their constants."""

    weight_bytes: int
    constant_bytes: int

    def __add__(self, other: QuantizedBytes) -> QuantizedBytes:
        return QuantizedBytes(self.weight_bytes + other.weight_bytes, self.constant_bytes + other.constant_bytes)

    def times(self, count: int) -> QuantizedBytes:
        return QuantizedBytes(self.weight_bytes * count, self.constant_bytes * count)


def packed_4bit_bytes(n: int) -> int:
    """``ceil(n / 2)`` bytes: two 4-bit codes per uint8 (bitsandbytes ``Params4bit``)."""
    return (n + 1) // 2


def absmax_blocks(n: int, blocksize: int) -> int:
    """Number of quantization blocks, ``ceil(n / blocksize)``."""
    return math.ceil(n / blocksize)


def constants_4bit_bytes(n: int, blocksize: int, double_quant: bool) -> int:
    """Quantization constants of one 4-bit matrix of ``n`` weights, in bytes.

    Without double quantization: fp32 absmax per block (32/64 = 0.5 bits/param at blocksize 64).
    With it: uint8 absmax per block + fp32 absmax per 256 blocks (8/64 + 32/(64·256) ≈ 0.127
    bits/param), plus the per-layer fp32 offset and dynamic map copy.
    """
    blocks = absmax_blocks(n, blocksize)
    code = tensor_bytes(NF4_CODE_ENTRIES, FP32_BITS)
    if not double_quant:
        return tensor_bytes(blocks, FP32_BITS) + code
    second = absmax_blocks(blocks, DQ_BLOCKSIZE)
    return (
        tensor_bytes(blocks, UINT8_BITS)
        + tensor_bytes(second, FP32_BITS)
        + tensor_bytes(1, FP32_BITS)  # offset = absmax.mean()
        + tensor_bytes(DYNAMIC_MAP_ENTRIES, FP32_BITS)
        + code
    )


def int8_bytes(in_features: int, out_features: int) -> QuantizedBytes:
    """LLM.int8 (``Int8Params``): int8 weight plus one fp32 scale (``SCB``) per output row.

    Dettmers et al., arXiv:2208.07339, Sec. 3 (vector-wise quantization).
    """
    n = in_features * out_features
    return QuantizedBytes(tensor_bytes(n, INT8_BITS), tensor_bytes(out_features, FP32_BITS))


def quantized_matrix_bytes(in_features: int, out_features: int, quant: QuantSpec) -> QuantizedBytes:
    """Bytes of one Linear weight under ``quant`` (bias excluded: it stays unquantized)."""
    if quant.type == "int8":
        return int8_bytes(in_features, out_features)
    n = in_features * out_features
    return QuantizedBytes(packed_4bit_bytes(n), constants_4bit_bytes(n, quant.blocksize, quant.double_quant))
