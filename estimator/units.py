"""Units: bytes inside, GiB at the edges.

Dtype widths live in bits; bytes = bits / 8, true division (integer division would turn 4 bits into 0 bytes).
"""

from __future__ import annotations

import math

MIB = 2**20
GIB = 2**30

# Storage width of one element, in bits, keyed by the names used in requests.
DTYPE_BITS: dict[str, int] = {
    "fp32": 32,
    "fp16": 16,
    "bf16": 16,
    "int8": 8,
    "uint8": 8,
    "nf4": 4,
    "fp4": 4,
    "bool": 8,  # torch.bool occupies one byte per element
    "int64": 64,
}

# The width of fp32, which optimizer states, peft's adapters and upcast activations share.
FP32_BITS = DTYPE_BITS["fp32"]
FP32_BYTES = 4  # FP32_BITS / 8, kept an int: byte counts of whole tensors are integers
INT64_BYTES = 8  # DTYPE_BITS["int64"] / 8: indices, token ids, labels
BOOL_BYTES = 1  # DTYPE_BITS["bool"] / 8: masks

# Accepted spellings -> canonical name (torch / transformers spellings included).
DTYPE_ALIASES: dict[str, str] = {
    "float32": "fp32",
    "float": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
}


def tensor_bytes(numel: int, bits: int | float) -> int:
    """Bytes that ``numel`` elements of ``bits`` width occupy, rounded up to whole bytes."""
    return int(math.ceil(numel * bits / 8))
