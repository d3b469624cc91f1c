"""Trainable-parameter counts of LoRA and its variants, one small function per shape.

Each count equals peft's ``get_nb_trainable_parameters()[0]`` for the same config
(checked in the tests against peft on tiny models).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .arch import ArchSpec, LinearSpec, ParamTarget
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


Target = LinearSpec | ParamTarget
# peft variants that go through LoraConfig, whose transformers-5 conversion reaches stacked parameters.
PARAM_WRAPPER_VARIANTS = ("lora", "rslora", "lora+")


@lru_cache(maxsize=1024)
def resolve_targets(arch: ArchSpec, lora: LoraSpec) -> tuple[tuple[Target, int], ...]:
    """The modules and stacked parameters (with multiplicity) that ``lora`` adapts, as peft would.

    ``"all-linear"`` is peft's meaning: every Linear/Conv1D except the output head, plus (LoRA
    only) the MoE router and experts that were Linears in transformers 4. VeRA's config is not
    converted, so it reaches Linears only. Unknown names raise :class:`EstimateError` listing
    the names this architecture has.
    """
    targets = lora.target_modules
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        names = arch.linear_names
    else:
        names = tuple(t.strip() for t in targets.split(",") if t.strip()) if isinstance(targets, str) else targets
        if not names:
            raise EstimateError("lora.target_modules", "must name at least one module or be 'all-linear'")
        unknown = [t for t in names if t not in arch.linear_names]
        if unknown:
            raise EstimateError(
                "lora.target_modules",
                f"{unknown} not in {arch.model_type}; its Linear modules are {list(arch.linear_names)} or 'all-linear'",
            )
    modules: list[tuple[Target, int]] = list(arch.linears_named(tuple(names)))
    if lora.variant != "vera":
        wrapped = arch.param_targets_named(tuple(names))
        if wrapped:
            _check_param_wrapper(lora, wrapped)
        modules += wrapped
    if not modules:
        raise EstimateError("lora.target_modules", f"{list(names)} selects no module {lora.variant} can adapt")
    return tuple(modules)


def _check_param_wrapper(lora: LoraSpec, wrapped: list[tuple[ParamTarget, int]]) -> None:
    """peft's ``lora.ParamWrapper.__init__`` refuses DoRA and dropout."""
    names = [p.name for p, _ in wrapped]
    if lora.variant not in PARAM_WRAPPER_VARIANTS:
        raise EstimateError("lora.variant", f"peft cannot apply {lora.variant} to the stacked parameters {names}")
    if lora.dropout:
        raise EstimateError("lora.dropout", f"peft's ParamWrapper (for {names}) needs lora_dropout = 0")


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


def param_wrapper_params(p: ParamTarget, r: int) -> int:
    """LoRA on ``E`` stacked ``d x k`` matrices through peft's ParamWrapper: ``E · r'(d + k)``.

    ``lora_A`` is ``(r'·E, k)`` and ``lora_B`` is ``(d, r'·E)`` with ``r' = r · fused`` (peft
    doubles the rank of the fused ``w1``/``w3`` so each keeps rank ``r``).
    """
    d, k, E = p.out_features, p.in_features, p.experts
    return E * lora_matrix_params(d, k, r * p.rank_factor)


def validate_rank(lora: LoraSpec, modules: tuple[tuple[Target, int], ...]) -> None:
    r = lora.r
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise EstimateError("lora.r", f"must be a positive integer, got {r!r}")
    if lora.variant == "vera":
        return  # VeRA's shared random matrices may be of any rank
    # Stacked parameters are left out: the router's d is the expert count, and peft stacks
    # r·E rows whatever r is.
    linears = [m for m, _ in modules if isinstance(m, LinearSpec)]
    if not linears:
        return
    smallest = min(min(m.in_features, m.out_features) for m in linears)
    if r > smallest:
        raise EstimateError("lora.r", f"{r} exceeds min(d, k) = {smallest} of a targeted module")


@lru_cache(maxsize=1024)
def adapter_params(arch: ArchSpec, lora: LoraSpec) -> int:
    """Trainable adapter parameters for ``lora`` on ``arch`` (peft's count)."""
    if lora.variant not in VARIANTS:
        raise EstimateError("lora.variant", f"must be one of {list(VARIANTS)}, got {lora.variant!r}")
    modules = resolve_targets(arch, lora)
    validate_rank(lora, modules)
    r = lora.r
    total = 0
    for m, count in modules:
        d, k = m.out_features, m.in_features
        if isinstance(m, ParamTarget):
            per = param_wrapper_params(m, r)
        elif lora.variant == "dora":
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
    modules = resolve_targets(arch, lora)
    max_in = max(m.in_features for m, _ in modules)
    max_out = max(m.out_features for m, _ in modules)
    return lora.r * (max_in + max_out)
