"""Architecture facts of a decoder-only transformer, read from a Hugging Face ``config.json``.

The registry: :data:`FAMILIES` maps each supported ``model_type`` to its family (the transformers
configuration class its config.json is read as, and its builder), gathered from the family modules
of :mod:`estimator.families` (one per transformers ``models/<family>/``), and
:func:`arch_from_config` picks one. The facts' types live in :mod:`estimator.spec` and are
re-exported here, where the rest of the estimator imports them from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .errors import EstimateError
from .families import (
    deepseek_v3,
    falcon,
    gemma3,
    glm4_moe,
    gpt2,
    gpt_neox,
    gpt_oss,
    granite,
    llama,
    llama4,
    mistral3,
    olmo2,
    opt,
    phi3,
    qwen3,
    smollm3,
)
from .families.config import MAX_DIM, MAX_LAYERS, Config, Family
from .spec import COMPOSITE_GELUS, ArchSpec, LinearSpec, MlaSpec, NormSpec, ParamTarget, ParamTensor

__all__ = [
    "COMPOSITE_GELUS", "FAMILIES", "FAMILY_MODULES", "MAX_DIM", "MAX_LAYERS", "MAX_TOTAL_PARAMS", "ArchSpec",
    "LinearSpec", "MlaSpec", "NormSpec", "ParamTarget", "ParamTensor", "arch_from_config",
]

# A model above this many parameters (1e14) is not a real model; refuse it.
MAX_TOTAL_PARAMS = 10**14

FAMILY_MODULES = (llama, phi3, gpt2, opt, gpt_neox, falcon, qwen3, olmo2, smollm3, granite, gemma3, gpt_oss,
                  glm4_moe, deepseek_v3, mistral3, llama4)
FAMILIES: dict[str, Family] = {t: family for m in FAMILY_MODULES for t, family in m.FAMILIES.items()}


def formula_backed(model: Any) -> bool:
    """Whether the formulas answer ``model`` (a catalog id, or a config of a ``model_type`` in
    :data:`FAMILIES`); the others are answered from a simulation of transformers' own code."""
    if not isinstance(model, Mapping):
        return True
    config = model.get("config", model)
    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    # a config the formulas' reader refuses (no model_type, not a string) is theirs to refuse, located
    return not isinstance(model_type, str) or not model_type or model_type in FAMILIES


def arch_from_config(config: Mapping[str, Any]) -> ArchSpec:
    """Build an :class:`ArchSpec` from a Hugging Face ``config.json`` dict.

    Raises :class:`EstimateError` naming the field for a malformed or unsupported config.
    """
    if not isinstance(config, Mapping):
        raise EstimateError("config", "must be a JSON object (the model's config.json)")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise EstimateError("config.model_type", "is required")
    family = FAMILIES.get(model_type)
    if family is None:
        raise EstimateError(
            "config.model_type", f"unsupported model_type {model_type!r}; supported: {sorted(FAMILIES)}"
        )
    spec = family.build(Config(config, family.config_class), model_type)
    if spec.total_params > MAX_TOTAL_PARAMS:
        raise EstimateError("config", f"describes {spec.total_params:.3g} parameters, above the limit of 1e14")
    return _attach_config(spec, config)


def _attach_config(spec: ArchSpec, config: Mapping[str, Any]) -> ArchSpec:
    return replace(spec, config=dict(config))
