"""Framework presets (``--recipe NAME``): the request fields a user of a framework gets when they
leave them alone, each read from the framework's source and cited beside it. A preset only fills
the fields a request leaves out: every one stays overridable.

Presets whose framework adds mechanisms not yet modelled are not offered: TRL's DPO trainer runs
chosen and rejected sequences with reference log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import EstimateError

RecipeName = Literal["hf-trainer", "trl-sft", "qlora-paper", "unsloth"]
RECIPE_NAMES: tuple[RecipeName, ...] = get_args(RecipeName)


@dataclass(frozen=True)
class Recipe:
    """A preset: its fields (request document keys, ``lora`` and ``quant`` as mappings) and where
    each default comes from."""

    name: str
    fields: dict[str, Any]
    source: str


RECIPES: dict[str, Recipe] = {
    "hf-trainer": Recipe(
        "hf-trainer",
        {"loop": "trainer", "grad_accum": 1, "autocast": "none", "optimizer": "adamw_fused"},
        "Hugging Face Trainer (transformers 5.23 TrainingArguments): optim adamw_torch_fused (torch >= 2.8), "
        "bf16=False and fp16=False (no autocast), gradient_accumulation_steps=1, gradient_checkpointing off; "
        "compute_loss keeps only the loss",
    ),
    "trl-sft": Recipe(
        "trl-sft",
        {"loop": "trainer", "grad_accum": 1, "autocast": "bf16", "optimizer": "adamw_fused",
         "gradient_checkpointing": True, "loss": "chunked"},
        "TRL's SFTTrainer (trl 1.16 SFTConfig over transformers 5.23 TrainingArguments): gradient_checkpointing=True "
        "and bf16=True (SFTConfig's own defaults), optim adamw_torch_fused, gradient_accumulation_steps=1, its "
        "fused LM head (add_fused_lm_head: the chunked loss); the model passed in already loaded in bf16 (given a "
        "model id instead, SFTTrainer loads float32 weights, which autocast here does not model yet)",
    ),
    "qlora-paper": Recipe(
        "qlora-paper",
        {"method": "qlora", "dtype": "bf16", "quant": {"type": "nf4", "double_quant": True, "blocksize": 64},
         "lora": {"r": 64, "alpha": 16.0, "target_modules": "all-linear", "dropout": 0.1},
         "gradient_checkpointing": True, "autocast": "bf16", "optimizer": "paged_adamw", "loop": "trainer"},
        "the QLoRA paper's setup (Dettmers et al. 2023, arXiv:2305.14314; its qlora.py on Hugging Face Trainer): "
        "NF4 with double quantization, bf16 compute and bf16=True, paged 32-bit AdamW, gradient checkpointing, "
        "LoRA r=64, alpha=16 on every linear layer, dropout 0.1 (models up to 13B)",
    ),
    "unsloth": Recipe(
        "unsloth",
        {"prepare_kbit": False, "optimizer": "adamw_8bit", "gradient_checkpointing": True, "autocast": "bf16",
         "loop": "trainer"},
        "an Unsloth-style setup: no prepare_model_for_kbit_training (norms, embeddings and lm_head stay in the "
        "compute dtype), 8-bit AdamW (adamw_8bit), gradient checkpointing, bf16 autocast; Unsloth's own kernels "
        "(fused cross-entropy, offloaded checkpoints) are not modelled",
    ),
}


def with_recipe(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (request document keys) with its ``recipe``'s fields filling the keys it leaves
    out or None (``lora`` and ``quant`` key by key); unchanged without a recipe."""
    name = values.get("recipe")
    if name is None:
        return dict(values)
    recipe = RECIPES.get(name)
    if recipe is None:
        raise EstimateError("recipe", f"must be one of {list(RECIPE_NAMES)}, got {name!r}")
    merged = dict(values)
    method = merged.get("method") or recipe.fields.get("method")
    for key, preset in recipe.fields.items():
        if key == "quant" and method != "qlora":
            continue  # a method that trains an unquantized base takes no preset quantization
        given = merged.get(key)
        if isinstance(preset, dict):
            merged[key] = {**preset, **{k: v for k, v in (given or {}).items() if v is not None}}
        elif given is None:
            merged[key] = preset
    return merged
