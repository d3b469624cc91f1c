"""Units: bytes inside, GiB at the edges.

Dtype widths live in bits; bytes = bits / 8, true division (integer division would turn 4 bits into 0 bytes).
"""

from __future__ import annotations

import math

KIB = 2**10
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

# Accepted spellings -> canonical name (torch / transformers spellings included).
DTYPE_ALIASES: dict[str, str] = {
    "float32": "fp32",
    "float": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
}


def canonical_dtype(name: str) -> str:
    """Return the canonical dtype name for ``name`` (e.g. ``"bfloat16" -> "bf16"``)."""
    key = str(name).lower()
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BITS:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPE_BITS)}")
    return key


def dtype_bytes(name: str) -> float:
    """Bytes per element of dtype ``name`` (may be fractional, e.g. 0.5 for nf4)."""
    return DTYPE_BITS[canonical_dtype(name)] / 8


def tensor_bytes(numel: int, bits: int | float) -> int:
    """Bytes that ``numel`` elements of ``bits`` width occupy, rounded up to whole bytes."""
    return int(math.ceil(numel * bits / 8))


def to_gib(n_bytes: int | float) -> float:
    """Bytes -> GiB (2**30 bytes)."""
    return n_bytes / GIB
