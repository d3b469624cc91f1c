"""The tensors peft adds for LoRA and its variants, listed once per variant; every count derives
from these lists.

Each count equals peft's trainable-parameter count for the same config (checked in the tests
against peft on tiny models and on every catalog family).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from .arch import ArchSpec, LinearSpec, ParamTarget
from .errors import EstimateError
from .peft_defaults import default_targets, peft_converts_targets

AllLinear = Literal["all-linear"]
ALL_LINEAR: AllLinear = "all-linear"
# The PEFT variants the estimator models; each one's tensors are in ``VARIANT_TENSORS`` below.
Variant = Literal["lora", "rslora", "lora+", "dora", "vera"]


@dataclass(frozen=True)
class LoraSpec:
    """Adapter settings, named as in peft's ``LoraConfig`` / ``VeraConfig``.

    ``target_modules`` is a tuple of module names or the string ``"all-linear"``; left out (None)
    it is peft's default for the model_type (:func:`peft_defaults.default_targets`), which
    ``request.normalize`` resolves so the estimate's request echo shows the modules.
    ``alpha`` is ``lora_alpha``; left out (None) it is ``2·r``, the CLI's and the service's
    documented default, resolved here once so every caller (and the estimate's request echo)
    sees the number. ``dropout`` is ``lora_dropout``: above zero every targeted module keeps its
    own dropped copy of its input for backward. ``loraplus_lr_ratio`` only changes learning
    rates (LoRA+, arXiv:2402.12354), not memory.
    """

    r: int = 16
    alpha: float | None = None
    target_modules: tuple[str, ...] | str | None = None
    variant: Variant = "lora"
    dropout: float = 0.0
    loraplus_lr_ratio: float = 16.0

    def __post_init__(self) -> None:
        if self.alpha is None:
            object.__setattr__(self, "alpha", default_alpha(self.r))


def targets_text(targets: Sequence[str] | str) -> str:
    """``target_modules`` as the surfaces show them: ``all-linear``, or the names comma-separated."""
    return targets if isinstance(targets, str) else ", ".join(targets)


def default_alpha(r: int) -> float | None:
    """``lora_alpha = 2·r`` (None for a rank that is not a number: validation names ``lora.r``)."""
    if isinstance(r, bool) or not isinstance(r, (int, float)):
        return None
    return 2.0 * r


@dataclass(frozen=True)
class AdapterTensor:
    """One trainable tensor peft adds to one adapted module: its attribute and torch shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


# ---- the tensors of each variant, for one ``d x k`` weight (d = out_features, k = in_features) ----

def lora_tensors(d: int, k: int, r: int) -> tuple[AdapterTensor, ...]:
    """LoRA: ``ΔW = B·A`` with ``B ∈ R^{d×r}``, ``A ∈ R^{r×k}``: ``r(d + k)`` parameters.

    Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685, Sec. 4.1.
    peft ``tuners/lora/layer.py``, ``LoraLayer.update_layer``: ``lora_A = nn.Linear(in_features, r)``,
    ``lora_B = nn.Linear(r, out_features)``, no bias (``lora_bias=False``).
    """
    return AdapterTensor("lora_A", (r, k)), AdapterTensor("lora_B", (d, r))


def dora_tensors(d: int, k: int, r: int) -> tuple[AdapterTensor, ...]:
    """DoRA: LoRA's ``A`` and ``B`` plus the magnitude ``m``, one entry per output feature.

    Liu et al., "DoRA: Weight-Decomposed Low-Rank Adaptation", arXiv:2402.09353, Eq. 2
    (``W' = m · (W + BA) / ||W + BA||_c``). peft ``tuners/lora/variants.py``,
    ``DoraLinearVariant.init``, adds ``lora_magnitude_vector``: a ``DoraLinearLayer``
    (``tuners/lora/dora.py``) whose ``weight`` is the ``d`` column norms.
    """
    return *lora_tensors(d, k, r), AdapterTensor("lora_magnitude_vector", (d,))


def vera_tensors(d: int, k: int, r: int) -> tuple[AdapterTensor, ...]:
    """VeRA: the scaling vectors ``b ∈ R^d`` and ``d ∈ R^r``; ``A`` and ``B`` are frozen and shared
    (:func:`vera_shared_tensors`).

    Kopiczko et al., "VeRA: Vector-based Random Matrix Adaptation", arXiv:2310.11454, Eq. 1.
    peft ``tuners/vera/layer.py``, ``VeraLayer.update_layer``: ``vera_lambda_b = ones(out_features)``,
    ``vera_lambda_d = randn(r)``.
    """
    return AdapterTensor("vera_lambda_b", (d,)), AdapterTensor("vera_lambda_d", (r,))


# Every variant the estimator knows, with the tensors peft adds for it. rsLoRA (scaling alpha/sqrt(r))
# and LoRA+ (Hayou et al., "LoRA+: Efficient Low Rank Adaptation of Large Models", arXiv:2402.12354:
# a larger learning rate for B, peft.optimizers.create_loraplus_optimizer) train LoRA's very tensors.
VARIANTS: tuple[Variant, ...] = get_args(Variant)
VARIANT_TENSORS: dict[Variant, Callable[[int, int, int], tuple[AdapterTensor, ...]]] = {
    "lora": lora_tensors,
    "rslora": lora_tensors,
    "lora+": lora_tensors,
    "dora": dora_tensors,
    "vera": vera_tensors,
}


def param_wrapper_tensors(p: ParamTarget, r: int) -> tuple[AdapterTensor, ...]:
    """LoRA on ``E`` stacked ``d x k`` matrices through peft's ParamWrapper: ``E · r'(d + k)``.

    peft ``tuners/lora/layer.py``, ``ParamWrapper.update_layer``: ``lora_A = nn.Linear(k, r'·E)``,
    ``lora_B = nn.Linear(r'·E, d)``, with ``r' = r · fused`` (peft doubles the rank of the fused
    ``w1``/``w3`` so each keeps rank ``r``).
    """
    stacked_rank = r * p.rank_factor * p.experts
    return (AdapterTensor("lora_A", (stacked_rank, p.in_features)),
            AdapterTensor("lora_B", (p.out_features, stacked_rank)))


Target = LinearSpec | ParamTarget
# peft variants that go through LoraConfig, whose transformers-5 conversion reaches stacked parameters.
PARAM_WRAPPER_VARIANTS = ("lora", "rslora", "lora+")


@lru_cache(maxsize=1024)
def resolve_targets(arch: ArchSpec, lora: LoraSpec) -> tuple[tuple[Target, int], ...]:
    """The modules and stacked parameters (with multiplicity) that ``lora`` adapts, as peft would.

    None is peft's default for the model_type (:func:`peft_defaults.default_targets`).
    ``"all-linear"`` is peft's meaning: every Linear/Conv1D except the output head, plus (LoRA
    only) the MoE router and experts that were Linears in transformers 4. VeRA's config is not
    converted, so it reaches Linears only. Unknown names raise :class:`EstimateError` listing
    the names this architecture has.
    """
    targets = default_targets(arch).modules if lora.target_modules is None else lora.target_modules
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
    module_names = tuple(names)
    if peft_converts_targets(arch, lora.variant):
        # peft's conversion (transformers_weight_conversion.py, _convert_peft_config_moe) moves the
        # transformers-4 expert names to target_parameters and drops them from target_modules: a
        # Linear of the same name elsewhere (a dense layer's or the shared experts' gate_proj) is
        # then not adapted
        legacy = {n for p in arch.layer_param_targets for n in p.legacy_names}
        module_names = tuple(n for n in names if n not in legacy)
    modules: list[tuple[Target, int]] = list(arch.linears_named(module_names))
    _refuse_tuple_outputs(arch, modules)
    if lora.variant != "vera":
        wrapped = arch.param_targets_named(tuple(names))
        if wrapped:
            _check_param_wrapper(lora, wrapped)
        modules += wrapped
    if not modules:
        raise EstimateError("lora.target_modules", f"{list(names)} selects no module {lora.variant} can adapt")
    return tuple(modules)


def _refuse_tuple_outputs(arch: ArchSpec, modules: list[tuple[Target, int]]) -> None:
    """peft (0.21.2, ``tuners/lora/layer.py``, ``Linear.forward``) adds the adapter's output to the
    wrapped module's: a Linear that returns a tuple (Llama 4's router) fails there."""
    broken = sorted({m.name for m, _ in modules if isinstance(m, LinearSpec) and m.returns_tuple})
    if not broken:
        return
    raise EstimateError("lora.target_modules",
                        f"peft would wrap {broken} of {arch.model_type}, an nn.Linear whose forward returns a tuple, "
                        f"and the forward fails adding the adapter's output to it ('all-linear' includes it); "
                        f"name the targets instead, from {list(arch.every_linear_target)}")


def _check_param_wrapper(lora: LoraSpec, wrapped: list[tuple[ParamTarget, int]]) -> None:
    """peft's ``lora.ParamWrapper.__init__`` refuses DoRA and dropout."""
    names = [p.name for p, _ in wrapped]
    if lora.variant not in PARAM_WRAPPER_VARIANTS:
        raise EstimateError("lora.variant", f"peft cannot apply {lora.variant} to the stacked parameters {names}")
    if lora.dropout:
        raise EstimateError("lora.dropout", f"peft's ParamWrapper (for {names}) needs lora_dropout = 0")


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


def module_tensors(m: Target, lora: LoraSpec) -> tuple[AdapterTensor, ...]:
    """The tensors peft adds to one targeted module or stacked parameter."""
    if isinstance(m, ParamTarget):
        return param_wrapper_tensors(m, lora.r)
    return VARIANT_TENSORS[lora.variant](m.out_features, m.in_features, lora.r)


@lru_cache(maxsize=1024)
def adapter_tensors(arch: ArchSpec, lora: LoraSpec, text_only: bool = False) -> tuple[tuple[AdapterTensor, int], ...]:
    """(tensor, how many in the model) of every trainable tensor peft adds for ``lora`` on ``arch``;
    ``text_only``: without those on a multimodal wrapper's tower and projector."""
    if lora.variant not in VARIANT_TENSORS:
        raise EstimateError("lora.variant", f"must be one of {list(VARIANTS)}, got {lora.variant!r}")
    modules = resolve_targets(arch, lora)
    validate_rank(lora, modules)
    return tuple((t, count) for m, count in modules for t in module_tensors(m, lora)
                 if not (text_only and m.role == "tower"))


@lru_cache(maxsize=1024)
def adapter_params(arch: ArchSpec, lora: LoraSpec) -> int:
    """Trainable adapter parameters for ``lora`` on ``arch`` (peft's count)."""
    return sum(t.numel * count for t, count in adapter_tensors(arch, lora))


def vera_shared_tensors(arch: ArchSpec, lora: LoraSpec) -> tuple[AdapterTensor, ...]:
    """VeRA's frozen ``vera_A (r, max k)`` and ``vera_B (max d, r)``, shared by every adapted
    module and held by peft as fp32 buffers (peft ``tuners/vera/model.py``,
    ``VeraModel._init_vera_A_vera_B``); none for the other variants."""
    if lora.variant != "vera":
        return ()
    modules = resolve_targets(arch, lora)
    max_in = max(m.in_features for m, _ in modules)
    max_out = max(m.out_features for m, _ in modules)
    return AdapterTensor("vera_A", (lora.r, max_in)), AdapterTensor("vera_B", (max_out, lora.r))


def vera_shared_params(arch: ArchSpec, lora: LoraSpec) -> int:
    return sum(t.numel for t in vera_shared_tensors(arch, lora))
