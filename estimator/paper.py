"""The seed papers' formulas, verbatim, so a reader can check each one against its source.

These are the *paper* figures shown next to the detailed breakdown; they ignore activations,
fp32 upcasts, runtime overhead and which layers bitsandbytes really quantizes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .quant import DQ_BLOCKSIZE

# QLoRA, arXiv:2305.14314, Sec. 3 "Double Quantization": blocksize 64 for weights,
# 32-bit absmax constants; second level 8-bit constants with blocksize DQ_BLOCKSIZE (256).
NF4_BLOCKSIZE = 64
ABSMAX_BITS = 32
DQ_CONSTANT_BITS = 8

# Bytes per parameter for full fine-tuning with Adam.
# fp16 weights + fp16 grads + two fp16 Adam moments: 2 + 2 + 4 = 8 bytes ("7B needs 56 GB",
# Elaraby 2025, "Efficient Fine-Tuning, LoRA and QLoRA", Background section).
FULL_FT_FP16_BYTES_PER_PARAM = 2 + 2 + 4
# Mixed precision: fp16 weights (2) + fp16 grads (2) + fp32 master weights (4) + fp32 Adam
# moments (4 + 4) = 16 bytes ("16 GB per 1B parameters",
# "Parameter-Efficient Fine-Tuning of LLMs: The Computational Baseline of Full Fine-Tuning"; ZeRO,
# Rajbhandari et al. 2019, arXiv:1910.02054, Sec. 3.1).
FULL_FT_MIXED_BYTES_PER_PARAM = 2 + 2 + 4 + 4 + 4
# QLoRA memory, Li 2025, "A Unified Parameter-Efficient Adaptation Framework for Quantized LLMs",
# Eq. (17): base at 4 bits = P/2 bytes, each LoRA parameter
# "parameter + two moments, 2 + 2 + 2 = 6 bytes".
QLORA_BYTES_PER_BASE_PARAM = 1 / 2
QLORA_BYTES_PER_LORA_PARAM = 6


def lora_ratio(d: int, k: int, r: int) -> float:
    """Trainable fraction of one ``d x k`` matrix under LoRA: ``ρ = r(k+d)/(dk) = r/d + r/k``.

    Li 2025, "A Unified Parameter-Efficient Adaptation Framework for Quantized LLMs", Eq. (9);
    Hu et al. 2021, LoRA, arXiv:2106.09685.
    """
    return r / d + r / k


def lora_params_square(L: int, m: int, r: int, d: int) -> int:
    """``P_LoRA = L · m · r · (2d)`` for ``m`` square ``d x d`` targets in each of ``L`` layers.

    Li 2025, "A Unified Parameter-Efficient Adaptation Framework for Quantized LLMs", Eq. (10).
    """
    return L * m * r * (2 * d)


def qlora_memory_bytes(P: int, P_lora: int) -> float:
    """``Mem ≈ P/2 + 6 · P_LoRA`` bytes: Li 2025, Eq. (17), after QLoRA (arXiv:2305.14314)."""
    return P * QLORA_BYTES_PER_BASE_PARAM + QLORA_BYTES_PER_LORA_PARAM * P_lora


def nf4_constant_bits(double_quant: bool) -> float:
    """Quantization-constant overhead of NF4 in bits per parameter.

    Without double quantization: ``32/64 = 0.5``; with it: ``8/64 + 32/(64·256) ≈ 0.127``.
    Dettmers et al. 2023, QLoRA, arXiv:2305.14314, Sec. 3 (Double Quantization).
    """
    if not double_quant:
        return ABSMAX_BITS / NF4_BLOCKSIZE
    return DQ_CONSTANT_BITS / NF4_BLOCKSIZE + ABSMAX_BITS / (NF4_BLOCKSIZE * DQ_BLOCKSIZE)


def full_ft_fp16_bytes(P: int) -> int:
    """Full fine-tuning in fp16 with Adam: ``(2 + 2 + 4) · P`` bytes (Elaraby 2025: 7B -> 56 GB)."""
    return FULL_FT_FP16_BYTES_PER_PARAM * P


def full_ft_mixed_bytes(P: int) -> int:
    """Mixed-precision full fine-tuning with Adam: ``16 · P`` bytes (ZeRO, arXiv:1910.02054)."""
    return FULL_FT_MIXED_BYTES_PER_PARAM * P


def lora_fp16_bytes(P: int, P_lora: int) -> int:
    """LoRA with an fp16 frozen base: ``2P + (2 + 2 + 4) · P_LoRA`` bytes (Elaraby 2025: 7B -> ~14.5 GB)."""
    return 2 * P + FULL_FT_FP16_BYTES_PER_PARAM * P_lora


def inference_fp16_bytes(P: int) -> int:
    """Weights only in fp16: ``2P`` bytes."""
    return 2 * P


@dataclass(frozen=True)
class PaperFigure:
    """The paper formula that applies to a method, its text and its value in bytes."""

    formula: str
    bytes: int


def paper_figure(method: str, P: int, P_lora: int, dtype_bits: int = 16) -> PaperFigure:
    """The seed formula for ``method`` evaluated at ``P`` base and ``P_lora`` adapter params."""
    if method == "qlora":
        return PaperFigure("P/2 + 6·P_LoRA bytes (QLoRA: Dettmers et al. 2023, arXiv:2305.14314)",
                           round(qlora_memory_bytes(P, P_lora)))
    if method == "lora":
        return PaperFigure("2·P + 8·P_LoRA bytes (fp16 base + fp16 adapters, grads, Adam; LoRA: Hu et al. 2021, "
                           "arXiv:2106.09685)",
                           lora_fp16_bytes(P, P_lora))
    if method == "full":
        if dtype_bits == 32:
            return PaperFigure("16·P bytes (mixed precision + Adam; ZeRO: Rajbhandari et al. 2019, arXiv:1910.02054)",
                               full_ft_mixed_bytes(P))
        return PaperFigure("(2 + 2 + 4)·P bytes (fp16 weights, grads, Adam)", full_ft_fp16_bytes(P))
    return PaperFigure("2·P bytes (fp16 weights)", inference_fp16_bytes(P))
