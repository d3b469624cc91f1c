"""Trainable-parameter counts of LoRA and its variants, one small function per shape.

Each count equals peft's ``get_nb_trainable_parameters()[0]`` for the same config
(checked in the tests against peft on tiny models).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .arch import ArchSpec, LinearSpec
from .errors import EstimateError

ALL_LINEAR = "all-linear"
VARIANTS = ("lora", "rslora", "lora+", "dora", "vera")


@dataclass(frozen=True)
class LoraSpec:
    """Adapter settings, named as in peft's ``LoraConfig`` / ``VeraConfig``.

    ``target_modules`` is a tuple of module names or the string ``"all-linear"``.
    ``alpha`` defaults to peft's default ``lora_alpha = 8``. ``dropout`` is ``lora_dropout``:
    above zero every targeted module keeps its own dropped copy of its input for backward.
    ``loraplus_lr_ratio`` only changes learning rates (LoRA+, arXiv:2402.12354), not memory.
    """

    r: int = 16
    alpha: float = 8.0
    target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")
    variant: str = "lora"
    dropout: float = 0.0
    loraplus_lr_ratio: float = 16.0


@lru_cache(maxsize=1024)
def resolve_targets(arch: ArchSpec, targets: tuple[str, ...] | str) -> tuple[tuple[LinearSpec, int], ...]:
    """The Linear modules (with multiplicity) that ``targets`` selects, as peft would.

    ``"all-linear"`` is peft's meaning: every Linear/Conv1D except the output head.
    Unknown names raise :class:`EstimateError` listing the names this architecture has.
    """
    if isinstance(targets, str):
        if targets.lower() == ALL_LINEAR:
            return tuple(arch.all_linears())
        targets = tuple(t.strip() for t in targets.split(",") if t.strip())
    if not targets:
        raise EstimateError("lora.target_modules", "must name at least one module or be 'all-linear'")
    known = set(arch.linear_names)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise EstimateError(
            "lora.target_modules",
            f"{unknown} not in {arch.model_type}; its Linear modules are {list(arch.linear_names)} or 'all-linear'",
        )
    return tuple(arch.linears_named(tuple(targets)))


def lora_matrix_params(d: int, k: int, r: int) -> int:
    """LoRA trainable parameters of one ``d x k`` weight: ``r(d + k)``.

    Hu et al., arXiv:2106.09685, Sec. 4.1: ``B ∈ R^{d×r}``, ``A ∈ R^{r×k}``.
    """
    return r * (d + k)


def dora_matrix_params(d: int, k: int, r: int) -> int:
    """DoRA: LoRA's ``r(d + k)`` plus the magnitude vector ``m``, one entry per output feature.

    Liu et al., arXiv:2402.09353, Eq. 2 (``W = m · V / ||V||_c``); peft stores ``m`` as
    ``lora_magnitude_vector`` with ``out_features = d`` entries.
    """
    return lora_matrix_params(d, k, r) + d


def vera_matrix_params(d: int, r: int) -> int:
    """VeRA: per-layer scaling vectors ``b ∈ R^d`` and ``d ∈ R^r``; A and B are frozen and shared.

    Kopiczko et al., arXiv:2310.11454, Eq. 1.
    """
    return d + r


def validate_rank(lora: LoraSpec, modules: tuple[tuple[LinearSpec, int], ...]) -> None:
    r = lora.r
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise EstimateError("lora.r", f"must be a positive integer, got {r!r}")
    if lora.variant == "vera":
        return  # VeRA's shared random matrices may be of any rank
    smallest = min(min(m.in_features, m.out_features) for m, _ in modules)
    if r > smallest:
        raise EstimateError("lora.r", f"{r} exceeds min(d, k) = {smallest} of a targeted module")


@lru_cache(maxsize=1024)
def adapter_params(arch: ArchSpec, lora: LoraSpec) -> int:
    """Trainable adapter parameters for ``lora`` on ``arch`` (peft's count)."""
    if lora.variant not in VARIANTS:
        raise EstimateError("lora.variant", f"must be one of {list(VARIANTS)}, got {lora.variant!r}")
    modules = resolve_targets(arch, lora.target_modules)
    validate_rank(lora, modules)
    r = lora.r
    total = 0
    for m, count in modules:
        d, k = m.out_features, m.in_features
        if lora.variant == "dora":
            per = dora_matrix_params(d, k, r)
        elif lora.variant == "vera":
            per = vera_matrix_params(d, r)
        else:  # lora, rslora, lora+: same shapes, other scaling / learning rates
            per = lora_matrix_params(d, k, r)
        total += per * count
    return total


def vera_shared_params(arch: ArchSpec, lora: LoraSpec) -> int:
    """VeRA's frozen shared ``A (r x max k)`` and ``B (max d x r)``, held as fp32 buffers by peft."""
    if lora.variant != "vera":
        return 0
    modules = resolve_targets(arch, lora.target_modules)
    max_in = max(m.in_features for m, _ in modules)
    max_out = max(m.out_features for m, _ in modules)
    return lora.r * (max_in + max_out)
