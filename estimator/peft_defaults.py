"""LoRA's default targets: the modules peft adapts when ``target_modules`` is left out (None).

peft 0.21.2 ``tuners/lora/model.py``, ``LoraModel._prepare_adapter_config``: with
``target_modules=None`` it looks the model's ``config.model_type`` up in
``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`` (``utils/constants.py``) and, for a
model_type it has no entry for, raises "Please specify `target_modules` or `target_parameters` in
`peft_config`". VeRA (``tuners/vera/model.py``) reads ``TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING``,
the same table but for ``phi``, which tunefit does not build.

Where peft has no entry the estimator assumes what the table holds for the families it lists: the
heads' query and value projections (Hu et al., "LoRA", arXiv:2106.09685, section 7.1: W_q and W_v;
:attr:`ArchSpec.query_value_target`), and the estimate says so (:func:`default_targets_note`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .arch import ArchSpec

PEFT_VERSION = "0.21.2"
MAPPING_NAME = "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING"
_QV = ("q_proj", "v_proj")
# peft 0.21.2 utils/constants.py, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: its entries for
# the model_types tunefit builds (arch.FAMILIES), in its order; the others have none
PEFT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn",),
    "opt": _QV,
    "gpt_neox": ("query_key_value",),
    "llama": _QV,
    "llama4": _QV,
    "falcon": ("query_key_value",),
    "mistral": _QV,
    "mixtral": _QV,
    "gemma": _QV,
    "gemma2": _QV,
    "gemma3_text": _QV,
    "qwen2": _QV,
    "qwen3": _QV,
}
# The model_type peft reads where it is not the config.json's: AutoModelForCausalLM builds
# Llama4ForCausalLM from llama4's text_config (transformers 5.23 ``models/auto/auto_factory.py``:
# ``config.get_text_config()`` for a class whose ``config_class`` is the text config)
BUILT_MODEL_TYPES = {"llama4": "llama4_text"}


@dataclass(frozen=True)
class DefaultTargets:
    """What ``target_modules`` None resolves to: the ``modules``, the ``model_type`` peft looks up,
    and whether peft's table has it (``in_peft``; else the query and value projections)."""

    modules: tuple[str, ...]
    model_type: str
    in_peft: bool


@lru_cache(maxsize=256)
def default_targets(arch: ArchSpec) -> DefaultTargets:
    """The modules LoRA adapts on ``arch`` when none are named."""
    model_type = BUILT_MODEL_TYPES.get(arch.model_type, arch.model_type)
    listed = PEFT_LORA_TARGETS.get(model_type)
    return DefaultTargets(arch.query_value_target if listed is None else listed, model_type, listed is not None)


def peft_converts_targets(arch: ArchSpec, variant: str) -> bool:
    """Whether peft rewrites the targets for transformers 5's fused MoE layers before adapting:
    ``PeftType.LORA`` configs (every variant but VeRA) of a family with a conversion table (peft
    0.21.2 ``utils/transformers_weight_conversion.py``, ``convert_peft_config_for_transformers``).
    Its ``_convert_peft_config_moe`` turns ``target_modules=None`` into an empty set before
    ``_prepare_adapter_config`` looks the default up, so ``get_peft_model`` raises ("No
    `target_modules` passed but also no `target_parameters` found")."""
    return variant != "vera" and arch.peft_reaches_experts


def default_targets_note(arch: ArchSpec, variant: str) -> str:
    """The estimate's assumption for targets left out: which modules, and whose default they are."""
    found = default_targets(arch)
    note = _whose_default(arch, found, peft_converts_targets(arch, variant))
    tower = sorted({m.name for m, _ in arch.tower_linears if m.name in found.modules})
    if tower:
        note += f"; peft matches a name anywhere, so the vision tower's {', '.join(tower)} take adapters too"
    return note + " — name target_modules to choose"


def _whose_default(arch: ArchSpec, found: DefaultTargets, converted: bool) -> str:
    names, who = ", ".join(found.modules), found.model_type
    built = f"; AutoModelForCausalLM builds {who} from {arch.model_type}'s text_config" \
        if who != arch.model_type else ""
    if found.in_peft and not converted:
        return (f"target_modules left out: {names}, peft {PEFT_VERSION}'s default for {who} "
                f"({MAPPING_NAME}, peft/utils/constants.py{built})")
    if found.in_peft:
        why = (f"peft {PEFT_VERSION} raises for {who} without target_modules: its transformers-5 MoE conversion "
               f"(_convert_peft_config_moe) empties them before its default ({MAPPING_NAME}) is looked up")
    else:
        why = f"peft {PEFT_VERSION} has no default target_modules for {who} (get_peft_model raises without them{built})"
    return f"{why}; assumed its query and value projections: {names}"
